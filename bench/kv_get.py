#!/usr/bin/env python3
"""Wall time of `foundation kv get` against its floor, side by side on the same real Consul agent.

    python3 bench/kv_get.py [--runs 15] [--no-importtime]

Measures (median of N runs each, interleaved so machine load hits all alike):
  python -c pass            the interpreter alone
  floor                     a minimal `python -c` that imports py-consul and reads the key
  typer floor               the same read as a one-command Typer app (what Typer itself costs)
  consul kv get             the Go CLI
  foundation kv get         our command (python -m foundation_cli, as the console script runs it)
  foundation kv list / discover / services   the other single-read commands
  foundation --help

Goals (issue 15): foundation kv get <= 1.2x the floor, every single-read command (kv list,
discover, services) <= 1.3x; foundation --help <= 100 ms.
Then prints where the time of `foundation kv get` goes (`python -X importtime`), by top-level package.
Starts and kills its own Consul agent (loopback, free ports, disable_update_check).

Figures, their baselines and what changed them: docs/performance.md. For a comparison that machine load
does not move, count instructions instead: bench/startup_icount.py (valgrind).
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab.consul import consul_path, start_agent  # noqa: E402

KEY = "foundation/kv/bench/key"
# The same read as a one-command Typer app: what any Typer CLI pays before its own code runs.
TYPER_FLOOR = (
    "import sys, typer, consul\n"
    "app = typer.Typer()\n"
    "@app.command()\n"
    "def get(key: str, recurse: bool = False):\n"
    "    c = consul.Consul(host='127.0.0.1', port={port})\n"
    "    sys.stdout.buffer.write(c.kv.get(key)[1]['Value'])\n"
    "app()\n"
)
FLOOR = (
    "import consul; c = consul.Consul(host='127.0.0.1', port={port}); "
    "import sys; sys.stdout.buffer.write(c.kv.get('{key}')[1]['Value'])"
)


def seeded_env(agent) -> dict[str, str]:
    """Store the key every case reads on ``agent``; the environment the cases run in (pointed at it)."""
    req = urllib.request.Request(f"{agent.http_addr}/v1/kv/{KEY}", data=b"bench-value", method="PUT")
    urllib.request.urlopen(req, timeout=5).read()
    # PYTHONDONTWRITEBYTECODE (set on some dev machines) would recompile every module on every run.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["CONSUL_HTTP_ADDR"] = agent.http_addr
    return env


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall ms, CPU ms of the child): CPU time is what other load on the machine disturbs least."""
    start = time.perf_counter()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd="/")
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = (time.perf_counter() - start) * 1000.0
    err = proc.stderr.read() if proc.stderr else b""
    if proc.stderr:
        proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}): {err.decode()[-500:]}")
    return elapsed, (usage.ru_utime + usage.ru_stime) * 1000.0


def where_time_goes(env: dict[str, str], args: list[str], top: int = 12) -> list[tuple[str, float]]:
    """Self import time (ms) per top-level package for ``python -m foundation_cli ARGS``."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "foundation_cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    totals: dict[str, float] = collections.defaultdict(float)
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "|" not in line:
            continue
        self_us, _cumulative, name = line[len("import time:") :].split("|")
        if not self_us.strip().isdigit():
            continue
        totals[name.strip().split(".")[0]] += int(self_us) / 1000.0
    return sorted(totals.items(), key=lambda kv: kv[1], reverse=True)[:top]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--no-importtime", action="store_true")
    opts = parser.parse_args()
    if opts.runs < 10:
        parser.error("--runs must be at least 10")
    consul = consul_path()
    if not consul:
        raise SystemExit("consul not installed: scripts/install-consul.sh")

    agent = start_agent()
    try:
        env = seeded_env(agent)
        py = sys.executable
        cases = {
            "python -c pass": [py, "-c", "pass"],
            "floor (py-consul read)": [py, "-c", FLOOR.format(port=agent.http_port, key=KEY)],
            "typer floor (same read)": [py, "-c", TYPER_FLOOR.format(port=agent.http_port), KEY],
            "consul kv get": [consul, "kv", "get", KEY],
            "foundation kv get": [py, "-m", "foundation_cli", "kv", "get", "bench/key"],
            "foundation kv list": [py, "-m", "foundation_cli", "kv", "list", "bench"],
            "foundation discover": [py, "-m", "foundation_cli", "discover", "consul"],
            "foundation services": [py, "-m", "foundation_cli", "services"],
            "foundation --help": [py, "-m", "foundation_cli", "--help"],
        }
        for argv in cases.values():  # warm the page cache and .pyc files
            timed(argv, env)
            timed(argv, env)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        cpu: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(opts.runs):
            for name, argv in cases.items():
                wall_ms, cpu_ms = timed(argv, env)
                samples[name].append(wall_ms)
                cpu[name].append(cpu_ms)
        imports = {}
        if not opts.no_importtime:
            for args in (["kv", "get", "bench/key"], ["--help"]):
                imports[" ".join(args)] = where_time_goes(env, args)
    finally:
        agent.close()

    med = {name: statistics.median(values) for name, values in samples.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    floor = med["floor (py-consul read)"]
    floor_cpu = med_cpu["floor (py-consul read)"]
    load = os.getloadavg()[0]
    print(f"median of {opts.runs} runs each, same agent, {os.cpu_count()} CPUs, load average {load:.1f}")
    if load > (os.cpu_count() or 1):
        print("WARNING: the machine is busy; absolute figures are inflated (ratios are more telling)")
    print(f"{'command':<26}{'median ms':>10}{'min ms':>9}{'x floor':>9}{'cpu ms':>9}{'cpu x floor':>12}")
    for name, values in samples.items():
        print(
            f"{name:<26}{med[name]:>10.1f}{min(values):>9.1f}{med[name] / floor:>9.2f}"
            f"{med_cpu[name]:>9.1f}{med_cpu[name] / floor_cpu:>12.2f}"
        )
    help_ms = med["foundation --help"]
    print()
    for name, goal in (
        ("foundation kv get", 1.2),
        ("foundation kv list", 1.3),
        ("foundation discover", 1.3),
        ("foundation services", 1.3),
    ):
        ratio, cpu_ratio = med[name] / floor, med_cpu[name] / floor_cpu
        print(
            f"{name:<22} = {ratio:.2f}x the floor, by CPU {cpu_ratio:.2f}x (goal <= {goal:.2f}x): "
            f"{'OK' if ratio <= goal else ('OK by CPU' if cpu_ratio <= goal else 'MISSED')}"
        )
    typer_floor = med["typer floor (same read)"]
    print(
        f"(a one-command Typer app doing the same read: {typer_floor / floor:.2f}x the floor; "
        f"foundation kv get = {med['foundation kv get'] / typer_floor:.2f}x that)"
    )
    interpreter = med["python -c pass"]
    print(
        f"foundation --help = {help_ms:.0f} ms, {med_cpu['foundation --help']:.0f} ms CPU (goal <= 100 ms): "
        f"{'OK' if help_ms <= 100 else 'MISSED'}; of which the bare interpreter {interpreter:.0f} ms"
    )
    print(
        f"consul kv get = {med['consul kv get']:.1f} ms; issue baseline: floor ~110 ms, consul ~24 ms, bare Typer+py-consul ~200 ms"
    )

    for args, totals in imports.items():
        print()
        print(f"where `foundation {args}` spends import time (self ms by top-level package, one run):")
        for name, ms in totals:
            print(f"  {name:<32}{ms:>8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
