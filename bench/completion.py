#!/usr/bin/env python3
"""Shell-completion latency: what one TAB costs, with Consul up, down, and silent.

Each TAB runs ``foundation`` through Typer's completion protocol (what the
scripts in completions/ do). Measured, N times each, wall clock of the process:

1. command names (``foundation k<TAB>``): no Consul involved;
2. dynamic names with Consul up (a throw-away ``consul agent -dev`` on loopback);
3. the same with Consul down (connection refused);
4. the same with Consul silent (accepts TCP, never answers: only the 0.5 s timeout ends it).

Baseline: no figure in the issue ("fast; fails silently when Consul is down").
Reference points from DESIGN.md: a bare Typer + py-consul command ≈ 200 ms here.
The ratio printed is each case over case 1 (the floor: Python + Typer start-up).

Usage: python3 bench/completion.py [-n 10]
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request


def _free_port() -> int:
    while True:
        port = random.randint(20000, 29999)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def _timed(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Wall ms, CPU ms (user+sys of the child: less sensitive to a busy machine), stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=30)
    wall = (time.perf_counter() - t) * 1000
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) * 1000
    return wall, cpu, out.stdout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=10)
    args = parser.parse_args()
    if not shutil.which("foundation") or not shutil.which("consul"):
        print("needs `foundation` and `consul` on PATH", file=sys.stderr)
        return 2

    workdir = tempfile.mkdtemp(prefix="bench-completion-")
    # A tiny app using the completion callbacks, as the placement/channel commands do.
    app = os.path.join(workdir, "fdbench.py")
    with open(app, "w") as fh:
        fh.write(
            textwrap.dedent(
                """
                import typer
                from foundation_cli.commands import completion
                app = typer.Typer()
                @app.command()
                def stop(name: str = typer.Argument(..., autocompletion=completion.service_names)) -> None:
                    pass
                app(prog_name="fdbench")
                """
            )
        )
    base = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    base["FOUNDATION_STATE_DIR"] = os.path.join(workdir, "state")

    port = _free_port()
    ports = [str(_free_port()) for _ in range(3)]
    agent = subprocess.Popen(
        ["consul", "agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-http-port", str(port),
         "-dns-port", "-1", "-grpc-port", "-1", "-serf-lan-port", ports[0], "-serf-wan-port", ports[1],
         "-server-port", ports[2], "-hcl", "disable_update_check = true"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    silent = socket.socket()
    try:
        addr = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{addr}/v1/status/leader", timeout=1) as r:
                    if r.read().strip() not in (b"", b'""'):
                        break
            except OSError:
                time.sleep(0.1)
        for name in ("web", "worker", "db"):
            req = urllib.request.Request(f"{addr}/v1/kv/foundation/services/{name}", data=b"{}", method="PUT")
            urllib.request.urlopen(req, timeout=5).read()
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]

        cases = [
            ("commands (foundation k<TAB>)", ["foundation"], {"_FOUNDATION_COMPLETE": "complete_bash",
             "COMP_WORDS": "foundation k", "COMP_CWORD": "1"}, None),
            ("service names, Consul up", [sys.executable, app], {"_FDBENCH_COMPLETE": "complete_bash",
             "COMP_WORDS": "fdbench w", "COMP_CWORD": "1", "CONSUL_HTTP_ADDR": addr}, ["web", "worker"]),
            ("service names, Consul down", [sys.executable, app], {"_FDBENCH_COMPLETE": "complete_bash",
             "COMP_WORDS": "fdbench w", "COMP_CWORD": "1", "CONSUL_HTTP_ADDR": f"127.0.0.1:{closed}"}, []),
            ("service names, Consul silent", [sys.executable, app], {"_FDBENCH_COMPLETE": "complete_bash",
             "COMP_WORDS": "fdbench w", "COMP_CWORD": "1",
             "CONSUL_HTTP_ADDR": f"127.0.0.1:{silent.getsockname()[1]}"}, []),
        ]  # fmt: skip
        floor = None
        print(f"{'case':34} {'wall p50 ms':>11} {'wall max':>9} {'cpu p50 ms':>11} {'x floor':>8}")
        for label, argv, extra, expect in cases:
            walls, cpus = [], []
            for _ in range(args.n):
                wall, cpu, out = _timed(argv, {**base, **extra})
                if expect is not None and out.split() != expect:
                    print(f"  {label}: unexpected answer {out.split()!r}", file=sys.stderr)
                walls.append(wall)
                cpus.append(cpu)
            med = statistics.median(walls)
            floor = floor or med
            print(f"{label:34} {med:11.0f} {max(walls):9.0f} {statistics.median(cpus):11.0f} {med / floor:8.2f}")
        print(
            f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: wall times grow with load, CPU less so)"
        )
    finally:
        silent.close()
        agent.kill()
        agent.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
