"""Time to find every advertising host on the lab bridge (issue 7: goal ≤ 1 s for 5 hosts).

Starts a lab of N namespace hosts (default 5), each running
``foundation advertise --interface <its ip>``, then from the root namespace,
bound to the bridge address only, times (median of several trials):

- raw python-zeroconf: ``Zeroconf(interfaces=[bridge])`` + ``ServiceBrowser``
  until N services resolve (the DESIGN.md baseline: 0.1 s for 3 hosts);
- Foundation's adapter in the same process: ``tools.mdns.browse(expect=N)``;
- the CLI: ``foundation discover-hosts --expect N --explain`` (its reported browse time, and wall time);
- the CLI with no flags (it returns once the answers settle: nothing new for 0.5 s) beside
  ``--timeout 2s`` (what every run without --expect waited before).

The discovery figure is the browse itself (raw vs adapter vs what the CLI
reports); the CLI's wall time is printed beside the bare start-up of
``foundation --version`` so process start-up is not mistaken for discovery.

Run as root from the repo root: ``python3 bench/mdns.py [--hosts 5] [--trials 5]``.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BASELINE_S = 0.1  # raw zeroconf, 3 hosts (DESIGN.md)
GOAL_S = 1.0


def raw_zeroconf(bridge_ip: str, n: int, timeout: float = 10.0) -> float:
    import threading

    from zeroconf import ServiceBrowser, ServiceInfo, ServiceStateChange, Zeroconf

    t0 = time.perf_counter()
    zc = Zeroconf(interfaces=[bridge_ip])
    done = threading.Event()
    resolved: set[str] = set()
    names: list[tuple[str, str]] = []
    lock = threading.Lock()

    def handler(zeroconf, service_type, name, state_change):
        if state_change is ServiceStateChange.Added:
            with lock:
                names.append((service_type, name))

    browser = ServiceBrowser(zc, "_foundation._tcp.local.", handlers=[handler])
    try:
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            with lock:
                pending = [x for x in names if x[1] not in resolved]
            for service_type, name in pending:
                info = ServiceInfo(service_type, name)
                if info.load_from_cache(zc) or info.request(zc, 1000):
                    resolved.add(name)
            if len(resolved) >= n:
                break
            time.sleep(0.005)
        elapsed = time.perf_counter() - t0
    finally:
        browser.cancel()
        zc.close()
    if len(resolved) < n:
        raise RuntimeError(f"raw zeroconf found {len(resolved)}/{n}")
    return elapsed


def adapter(bridge_ip: str, n: int) -> float:
    from foundation_cli.core.mdns_records import record_from_answer
    from foundation_cli.raw.recorder import Recorder, use_recorder
    from foundation_cli.tools import mdns

    t0 = time.perf_counter()
    with use_recorder(Recorder()):
        answers = mdns.browse(mdns.resolve_binding([bridge_ip]), timeout=10.0, expect=n)
    records = [record_from_answer(a) for a in answers]
    elapsed = time.perf_counter() - t0
    if len([r for r in records if "problems" not in r.extra]) < n:
        raise RuntimeError(f"adapter found {len(records)}/{n}")
    return elapsed


def cli(bridge_ip: str, n: int) -> tuple[float, float]:
    """(wall time of the whole command, the browse time it reports under --explain)."""
    import re

    argv = ["discover-hosts", "-i", bridge_ip, "--expect", str(n), "-t", "10", "--json", "--explain", "--no-color"]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "foundation_cli", *argv], capture_output=True, text=True, timeout=30)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0 or r.stdout.count('"address"') < n:
        raise RuntimeError(f"CLI failed: {r.returncode} {r.stderr.strip()}")
    m = re.search(r"answered in ([0-9.]+) s", r.stderr)
    return elapsed, float(m.group(1)) if m else float("nan")


def cli_plain(bridge_ip: str, n: int, extra: list[str]) -> float:
    """Wall time of `discover-hosts` without --expect: it returns once the answers settle (or at -t)."""
    argv = ["discover-hosts", "-i", bridge_ip, "--json", "--no-color", *extra]
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "foundation_cli", *argv], capture_output=True, text=True, timeout=30)
    elapsed = time.perf_counter() - t0
    if r.returncode != 0 or r.stdout.count('"address"') < n:
        raise RuntimeError(f"CLI found {r.stdout.count(chr(34) + 'address' + chr(34))}/{n}: {r.stderr.strip()}")
    return elapsed


def startup() -> float:
    """Wall time of `foundation --version`: the interpreter + Typer start-up every command pays."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "foundation_cli", "--version"], capture_output=True, timeout=30, check=True)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/mdns.py needs root (network namespaces)", file=sys.stderr)
        return 2
    from tests.lab.netns import Lab

    with Lab(args.hosts, name_prefix="mb") as lab:
        procs = []
        try:
            for h in lab.hosts:
                procs.append(
                    h.popen(
                        [sys.executable, "-m", "foundation_cli", "advertise", "--interface", h.ip],
                        stdout=subprocess.PIPE,
                        stderr=subprocess.DEVNULL,
                        text=True,
                    )
                )
            for p in procs:
                line = p.stdout.readline()
                if not line.startswith("announcing"):
                    raise RuntimeError("an advertiser did not start")
            results: dict[str, list[float]] = {
                "raw zeroconf": [],
                "foundation adapter": [],
                "CLI browse (--explain)": [],
                "CLI wall, whole command": [],
                "CLI, no flags (settles)": [],
                "CLI, --timeout 2s (before)": [],
                "CLI start-up (--version)": [],
            }
            for _ in range(args.trials):
                results["raw zeroconf"].append(raw_zeroconf(lab.bridge_ip, args.hosts))
                results["foundation adapter"].append(adapter(lab.bridge_ip, args.hosts))
                wall, browse = cli(lab.bridge_ip, args.hosts)
                results["CLI browse (--explain)"].append(browse)
                results["CLI wall, whole command"].append(wall)
                results["CLI, no flags (settles)"].append(cli_plain(lab.bridge_ip, args.hosts, []))
                results["CLI, --timeout 2s (before)"].append(cli_plain(lab.bridge_ip, args.hosts, ["-t", "2"]))
                results["CLI start-up (--version)"].append(startup())
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
    raw = statistics.median(results["raw zeroconf"])
    print(f"mDNS: time to find all {args.hosts} advertising hosts (median of {args.trials}, bound to {lab.bridge_ip})")
    for name, values in results.items():
        med = statistics.median(values)
        print(
            f"  {name:26s} {med:6.3f} s  (min {min(values):.3f}, max {max(values):.3f})"
            f"  ×{med / raw:4.1f} vs raw  ×{med / BASELINE_S:4.1f} vs baseline {BASELINE_S} s/3 hosts"
            f"  goal ≤{GOAL_S} s: {'met' if med <= GOAL_S else 'MISSED'}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
