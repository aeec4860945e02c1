#!/usr/bin/env python3
"""The operator-side cost of `foundation up` for many hosts: planning, per-host rendering, state (no network).

    python3 bench/up_operator.py [--hosts 1000] [--parallel 10]

Runs `up`'s own steps (core/orchestrator.py UP_STEPS) on a run state whose SSH connections are
in-memory fakes: every host probes as a fresh machine with a usable consul and this machine's
Python, and every command or upload "succeeds" at once. What remains is what the operator's
machine does itself: parse foundation.yaml, plan (names, servers, gossip key, per-host Consul
config), secure_plan (ACL tokens, TLS CA and server certs), render and record every host's
commands and uploads (apply), save the state file, and render the result (table and JSON).
The steps that need a live cluster (acl_bootstrap, wait_cluster, verify_hosts) are skipped.
Prints each phase's wall and CPU time, side by side for 1 host and N hosts, per host.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class FakeTarget:
    def __init__(self, hostname: str) -> None:
        self.hostname = hostname
        self.alias = hostname
        self.user = "root"
        self.port = 22


class FakeConnection:
    """An SSH connection that records what it is asked and answers like a fresh host (exit 0)."""

    def __init__(self, address: str) -> None:
        self.target = FakeTarget(address)
        self.label = address
        self.sent = 0

    def run(self, command: str, *, write: bool = True, timeout: float = 120.0, **_kw):
        from foundation_cli.tools.ssh import ExecResult

        self.sent += len(command)
        return ExecResult(0, "", "")

    def upload(self, path: str, content: bytes, *, mode: int = 0o644, timeout: float = 300.0) -> None:
        self.sent += len(content)

    def read_file(self, path: str) -> bytes | None:
        return None

    def close(self) -> None:
        pass


def fake_probe(index: int, address: str, bundle):
    from foundation_cli.core.bootstrap import Probe

    return Probe(
        os="debian-12",
        arch=bundle.arch,
        init="sshd",
        hostname=f"node{index}",
        python=bundle.python,
        addr=address,
        uid="0",
        consul_path="/usr/local/bin/consul",
        consul_version="Consul v1.8.7",
    )


def run_once(n: int, parallel: int, state_dir: Path) -> dict[str, tuple[float, float]]:
    """Phase -> (wall s, CPU s) for one `up` of ``n`` fresh fake hosts."""
    from foundation_cli.core import agent_bundle, cluster_config, orchestrator, secure_up
    from foundation_cli.raw.recorder import Recorder, use_recorder

    os.environ["FOUNDATION_STATE_DIR"] = str(state_dir)
    secure_up.acl_bootstrap = lambda run: None  # needs a live cluster (apply calls it between servers and clients)
    bundle = agent_bundle.build()  # cached: built once per source tree, as a second `up` finds it
    phases: dict[str, tuple[float, float]] = {}

    def timed(name, fn):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        phases[name] = (time.perf_counter() - wall, time.process_time() - cpu)
        return out

    hosts = "".join(f"  - 10.{i // 65536}.{i // 256 % 256}.{i % 256 + 1}\n" for i in range(n))
    text = f"hosts:\n{hosts}ssh:\n  user: root\n"
    recorder = Recorder()
    with use_recorder(recorder):
        cfg = timed("parse foundation.yaml", lambda: cluster_config.parse(text))
        run = orchestrator.start_up(cfg, parallel=parallel)
        run.bundle = bundle
        for i, h in enumerate(run.hosts):
            run.conns[h.address] = FakeConnection(h.address)
            run.probes[h.address] = fake_probe(i, h.address, bundle)
        timed("plan", lambda: orchestrator.plan(run))
        timed("secure_plan (tokens, TLS)", lambda: secure_up.secure_plan(run))
        timed("apply (render + record)", lambda: orchestrator.apply(run))
        run.formed = False  # no cluster to write the KV record to: the state file only
        timed("record (state file)", lambda: orchestrator.record(run))

        def render() -> int:
            from foundation_cli.commands.output import plain_table

            rows = [[r.alias, r.node_name, r.role, r.state, "changed"] for r in run.result.hosts]
            table = plain_table(["HOST", "NODE", "ROLE", "STATE", "WHAT"], rows) or ""
            return len(json.dumps(run.result.to_dict())) + len(table)

        timed("render result (JSON + table)", render)
    failed = [r for r in run.result.hosts if r.error]
    if failed:
        raise SystemExit(f"{len(failed)} fake hosts failed, first: {failed[0].error}")
    phases["(bytes sent)"] = (float(sum(c.sent for c in run.conns.values())), 0.0)
    return phases


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=1000)
    parser.add_argument("--parallel", type=int, default=10)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-up-op-") as tmp:
        run_once(1, opts.parallel, Path(tmp, "warm"))  # imports and the bundle cache, once
        one = run_once(1, opts.parallel, Path(tmp, "one"))
        many = run_once(opts.hosts, opts.parallel, Path(tmp, "many"))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n = opts.hosts
    print(f"operator side of `up`, fake hosts (no network), --parallel {opts.parallel}, load {os.getloadavg()[0]:.1f}")
    print(f"{'phase':<32}{'1 host ms':>11}{f'{n} hosts s':>13}{'CPU s':>8}{'per host ms':>13}")
    total_wall = total_cpu = 0.0
    for name, (wall, cpu) in many.items():
        if name.startswith("("):
            continue
        total_wall += wall
        total_cpu += cpu
        print(f"{name:<32}{one[name][0] * 1000:>11.1f}{wall:>13.2f}{cpu:>8.2f}{wall / n * 1000:>13.2f}")
    print(
        f"{'total':<32}{sum(v[0] for k, v in one.items() if not k.startswith('(')) * 1000:>11.1f}"
        f"{total_wall:>13.2f}{total_cpu:>8.2f}{total_wall / n * 1000:>13.2f}"
    )
    sent = many["(bytes sent)"][0]
    print(f"commands and uploads rendered for the hosts: {sent / 1e6:.0f} MB; peak RSS {rss:.0f} MB")
    print(
        "(secure_plan makes the cluster CA and one certificate per server with `consul tls`: per cluster, not per host)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
