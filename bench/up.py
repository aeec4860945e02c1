#!/usr/bin/env python3
"""Wall time of `foundation up` over SSH: 1 host vs 5 hosts, and the no-change re-run on 5.

    sudo python3 bench/up.py [--runs 1]

Uses the network-namespace lab (root): 6 fresh hosts, one 1-host cluster and one 5-host cluster,
each with its own state dir. The agent bundle is built (cached) before timing, as an operator's
second `up` would find it. Prints:
  up 1 host (fresh)          seconds
  up 5 hosts (fresh)         seconds, ratio to 1 host      (goal <= 1.3: hosts run in parallel)
  up 5 hosts (no change)     seconds                       (goal <= 3 s)
  down 5 hosts               seconds
Every process it starts lives in the lab's namespaces and dies with the lab.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from tests.lab.netns import Lab  # noqa: E402

SETTLE = 10.0


def write_config(path: Path, lab: Lab, hosts) -> None:
    lines = "".join(f"  - {h.ip}\n" for h in hosts)
    path.write_text(
        f"hosts:\n{lines}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n  known_hosts: {lab.known_hosts}\n"
    )


def timed(argv: list[str], cwd: Path, env: dict) -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    took = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv[3:])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench/up.py needs root (network namespaces)")
    from foundation_cli.core import agent_bundle

    bundle = agent_bundle.build()  # warm the cache, as a second `up` from this machine finds it
    cli = [sys.executable, "-m", "foundation_cli"]
    with tempfile.TemporaryDirectory(prefix="bench-up-") as tmp, Lab(6) as lab:
        base = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
        base["FOUNDATION_AGENT_BUNDLE"] = str(bundle.path)
        one, five = Path(tmp, "one"), Path(tmp, "five")
        for d in (one, five):
            d.mkdir()
        env1 = {**base, "FOUNDATION_STATE_DIR": str(one / "state")}
        env5 = {**base, "FOUNDATION_STATE_DIR": str(five / "state")}
        write_config(one / "foundation.yaml", lab, lab.hosts[:1])
        write_config(five / "foundation.yaml", lab, lab.hosts[1:6])
        t1 = timed(cli + ["up"], one, env1)
        t5 = timed(cli + ["up"], five, env5)
        time.sleep(SETTLE)  # let the just-started agents finish booting, as before an operator's later re-run
        t5_again = timed(cli + ["up"], five, env5)
        t_down = timed(cli + ["down"], five, env5)
    load = os.getloadavg()[0]
    print(f"up 1 host (fresh)        {t1:6.2f} s")
    print(f"up 5 hosts (fresh)       {t5:6.2f} s   ratio {t5 / t1:.2f}  (goal <= 1.3)")
    print(f"up 5 hosts (no change)   {t5_again:6.2f} s   (goal <= 3 s; {SETTLE:.0f} s after the fresh up)")
    print(f"down 5 hosts             {t_down:6.2f} s")
    print(f"(load average during the run: {load:.1f} on {os.cpu_count()} CPUs; agent bundle {bundle.size // 1024} KiB)")


if __name__ == "__main__":
    main()
