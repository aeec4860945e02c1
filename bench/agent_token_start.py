#!/usr/bin/env python3
"""How late does a server's node agent start after its ACL token exists, on a fresh `foundation up`?

On a new cluster `up` starts each server's agent right after its Consul, before the ACL step (it
needs the first leader) has made the agent's token: the agent's first `GET /v1/agent/self` gets
403 "ACL not found" until then (docs/reliability.md, "An agent whose token does not exist yet").
Each trial is a fresh `up` of a 4-host lab (3 servers, 1 client, ACLs + TLS). Trials alternate
between the agent's current retry (every 0.2 s for 40 s) and the old schedule
(`FOUNDATION_AGENT_TOKEN_WAIT=0` in `agent.env`: backoff 0.25, 0.5, 1, 2, 4 s). For every server
agent that got the 403, the lag is its "registered service" log line minus Consul's "ACL bootstrap
completed" (the tokens are made right after it). Needs root; one lab for all trials. Timing on a
busy machine is noisy: it prints the load. Not part of the test suite.

    python3 bench/agent_token_start.py [--trials 10]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.cli import cluster_env, foundation, pinned_bundle  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402

AGENT_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")
CONSUL_TIME = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3})Z \[INFO\]  agent\.server\.acl: ACL bootstrap completed"
)


def agent_time(line: str) -> float:
    stamp = AGENT_TIME.match(line)
    assert stamp, line
    return datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f").replace(tzinfo=timezone.utc).timestamp()


def wipe(lab: Lab, root: Path) -> None:
    for h in lab.hosts:
        h.crash()
        h.exec("rm -rf /etc/foundation /var/lib/foundation /opt/foundation /var/log/foundation /run/foundation")
    shutil.rmtree(root / "state", ignore_errors=True)


def trial(lab: Lab, root: Path, env: dict, *, old: bool) -> list[float]:
    wipe(lab, root)
    hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
    agent = "agent:\n  env: {FOUNDATION_AGENT_TOKEN_WAIT: '0'}\n" if old else ""
    (root / "foundation.yaml").write_text(
        f"hosts:\n{hosts}servers: 3\n{agent}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
        f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
    )
    proc = foundation(["up"], env=env, cwd=root, timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    time.sleep(2)
    made = min(
        datetime.fromisoformat(m).replace(tzinfo=timezone.utc).timestamp()
        for h in lab.hosts[:3]
        for m in CONSUL_TIME.findall(h.path("/var/log/foundation/consul.log").read_text())
    )
    lags = []
    for h in lab.hosts[:3]:
        lines = h.path("/var/log/foundation/agent.log").read_text().splitlines()
        if any("403: ACL not found" in line for line in lines):
            registered = next(line for line in lines if "registered service" in line)
            lags.append(agent_time(registered) - made)
    return lags


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="agent-token-"))
    env = cluster_env(root, bundle=pinned_bundle(root))
    lab = Lab(4)
    lags: dict[str, list[float]] = {"now (0.2 s steps)": [], "old (backoff)": []}
    hit = {k: 0 for k in lags}
    try:
        for n in range(args.trials):
            old = n % 2 == 1
            key = "old (backoff)" if old else "now (0.2 s steps)"
            got = trial(lab, root, env, old=old)
            lags[key] += got
            hit[key] += bool(got)
            load = os.getloadavg()[0]
            print(
                f"trial {n + 1} {key}: 403 on {len(got)} servers; lags {[round(x, 2) for x in got]} s (load {load:.1f})"
            )
    finally:
        lab.close()
        shutil.rmtree(root, ignore_errors=True)
    print()
    for key, values in lags.items():
        if values:
            print(
                f"{key}: median {statistics.median(values):.2f} s, max {max(values):.2f} s after the tokens "
                f"({len(values)} agents in {hit[key]} runs with a 403)"
            )
        else:
            print(f"{key}: no run had a 403 (the ACL step came first)")
    now, old = lags["now (0.2 s steps)"], lags["old (backoff)"]
    if now and old:
        print(f"ratio old/now (median lag): {statistics.median(old) / max(statistics.median(now), 1e-3):.1f}x")


if __name__ == "__main__":
    main()
