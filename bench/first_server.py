#!/usr/bin/env python3
"""The first server dies: does the CLI keep working through the others?

For each trial: a fresh 3-server lab cluster, the state file `foundation up`
would write (every server's address, the first one chosen), one `kv put`; then
every process on the first server's host is killed (SIGKILL, sshd kept) and the
CLI is run at once, as a user would: `kv put` (retried until it succeeds, for
when the dead server was the Raft leader and the others are electing), `kv get`
and `ps`. Reports per trial whether the first server was the leader and how
long each command took. Needs root. Not part of the test suite.

    python3 bench/first_server.py [--trials 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.lab.consul import ConsulCluster  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402


def cli(args: list[str], env: dict) -> tuple[int, float, str]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "foundation_cli", *args], env=env, capture_output=True, text=True)
    return proc.returncode, time.monotonic() - started, (proc.stdout + proc.stderr).strip()


def trial(n: int) -> dict:
    lab = Lab(3)
    cluster = ConsulCluster(lab).start()
    state = Path(tempfile.mkdtemp(prefix="fs-state-"))
    try:
        addrs = cluster.http_addrs
        (state / "state.json").write_text(json.dumps({"consul_http_addr": addrs[0], "consul_http_addrs": addrs}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        env["FOUNDATION_STATE_DIR"] = str(state)
        assert cli(["kv", "put", "bench/before", "1"], env)[0] == 0
        leader = cluster.leader()
        was_leader = bool(leader) and leader.startswith(cluster.hosts[0].ip + ":")
        cluster.hosts[0].crash()
        fault = time.monotonic()
        attempts, put_ok, first_error = 0, False, ""
        while time.monotonic() - fault < 60:
            attempts += 1
            rc, _t, out = cli(["kv", "put", "bench/after", str(n)], env)
            if rc == 0:
                put_ok = True
                break
            first_error = first_error or out.splitlines()[0][:160]
        put_s = time.monotonic() - fault
        get_rc, get_s, get_out = cli(["kv", "get", "bench/after"], env)
        ps_rc, ps_s, _ = cli(["ps", "--json"], env)
        return {
            "trial": n,
            "first_was_leader": was_leader,
            "put_ok": put_ok,
            "put_attempts": attempts,
            "put_s": round(put_s, 2),
            "first_error": first_error,
            "get_ok": get_rc == 0 and get_out == str(n),
            "get_s": round(get_s, 2),
            "ps_ok": ps_rc == 0,
            "ps_s": round(ps_s, 2),
        }
    finally:
        cluster.close()
        lab.close()
        for f in state.iterdir():
            f.unlink()
        state.rmdir()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    rows = [trial(n) for n in range(1, args.trials + 1)]
    for row in rows:
        print(json.dumps(row))
    ok = sum(r["put_ok"] and r["get_ok"] and r["ps_ok"] for r in rows)
    puts = [r["put_s"] for r in rows]
    print(
        f"{ok}/{len(rows)} trials: kv put, kv get and ps worked with the first server dead; "
        f"first write after the fault {statistics.median(puts):.2f} s median, {max(puts):.2f} s max "
        f"({sum(r['first_was_leader'] for r in rows)} trials where it was the leader)"
    )


if __name__ == "__main__":
    main()
