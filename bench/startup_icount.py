#!/usr/bin/env python3
"""Instructions executed by the start-up cases of bench/kv_get.py, against the same floor, in one run.

    python3 bench/startup_icount.py [CASE ...]     (needs valgrind; cases: pass floor typer kvget
                                                    kvlist services discover help; default all)

Wall time on a shared 2-core machine moves by 20-50% with the load; the number of instructions a
process executes (valgrind's callgrind, user space only) moves by well under 1% from run to run,
whatever the load. So this prints, for each case, millions of instructions and the ratio to the
floor (`python -c` importing py-consul and reading one key). Kernel time is not counted: a cost
that is mostly system calls (page faults, mmap churn) shows in bench/kv_get.py's CPU column only.
Each case runs once unmeasured first (page cache, .pyc files). Starts and kills its own Consul agent
(loopback, free ports, disable_update_check); about 3 s per case.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.kv_get import FLOOR, KEY, TYPER_FLOOR, seeded_env  # noqa: E402
from tests.lab.consul import start_agent  # noqa: E402


def instructions(argv: list[str], env: dict[str, str]) -> int:
    subprocess.run(argv, env=env, capture_output=True, cwd="/", timeout=60)  # warm
    proc = subprocess.run(
        ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *argv],
        env=env,
        capture_output=True,
        text=True,
        cwd="/",
        timeout=300,
    )
    found = re.search(r"Collected : (\d+)", proc.stderr)
    if proc.returncode != 0 or not found:
        raise SystemExit(f"{' '.join(argv)} failed under valgrind ({proc.returncode}): {proc.stderr[-500:]}")
    return int(found.group(1))


def main() -> int:
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind not installed (apt-get install valgrind)")
    agent = start_agent()
    try:
        env = seeded_env(agent)
        py = os.path.realpath(sys.executable)  # the interpreter itself, not a pyenv shim script
        cli = [py, "-m", "foundation_cli"]
        cases = {
            "pass": [py, "-c", "pass"],
            "floor": [py, "-c", FLOOR.format(port=agent.http_port, key=KEY)],
            "typer": [py, "-c", TYPER_FLOOR.format(port=agent.http_port), KEY],
            "kvget": [*cli, "kv", "get", "bench/key"],
            "kvlist": [*cli, "kv", "list", "bench"],
            "services": [*cli, "services"],
            "discover": [*cli, "discover", "consul"],
            "help": [*cli, "--help"],
        }
        names = sys.argv[1:] or list(cases)
        unknown = [n for n in names if n not in cases]
        if unknown:
            raise SystemExit(f"unknown case(s) {unknown}; choose from {list(cases)}")
        counts = {name: instructions(cases[name], env) for name in dict.fromkeys(["floor", *names])}
    finally:
        agent.close()
    floor = counts["floor"]
    goals = {"kvget": 1.2, "kvlist": 1.3, "services": 1.3, "discover": 1.3}
    print(f"instructions (callgrind, user space), load average {os.getloadavg()[0]:.1f}")
    print(f"{'case':<10}{'M instr':>10}{'x floor':>9}  goal")
    for name in names:
        ratio = counts[name] / floor
        goal = goals.get(name)
        verdict = f"<= {goal:.1f}x {'OK' if ratio <= goal else 'MISSED'}" if goal else ""
        print(f"{name:<10}{counts[name] / 1e6:>10.1f}{ratio:>9.3f}  {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
