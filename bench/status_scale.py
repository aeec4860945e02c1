#!/usr/bin/env python3
"""`foundation status --json` and `foundation optimize --json` on a catalog of 2,000 nodes / 10,000 instances.

Starts one Consul server on loopback ports, registers N nodes with K service
instances each (every instance with a passing check) through
PUT /v1/catalog/register (one request per instance, a bounded pool of 8
keep-alive connections), then runs each command R times in a fresh process
and reports wall time, CPU time, the snapshot's own read time (`status --json`
`duration_ms`: reads + window, without interpreter start-up) and the peak RSS of
the command process (resource.getrusage(RUSAGE_CHILDREN) of a one-child wrapper).

Issue 6 goal: each command <= 2 s and <= 200 MB on this catalog. The default
observation window (1 s, `--window`) is part of the measured time: it is how
the commands measure churn, event rate and flapping. `--window 0` is timed too.

Usage: python3 bench/status_scale.py [--nodes 2000] [--per-node 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOAL_S = 2.0
GOAL_MB = 200.0

WRAPPER = r"""
import json, resource, subprocess, sys, time
t0 = time.monotonic()
r = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.monotonic() - t0
u = resource.getrusage(resource.RUSAGE_CHILDREN)
try:
    inner = json.loads(r.stdout).get("duration_ms")
except ValueError:
    inner = None
if inner is None:
    inner = 0.0
print(json.dumps({"rc": r.returncode, "wall": wall, "cpu": u.ru_utime + u.ru_stime, "maxrss_kb": u.ru_maxrss,
                  "bytes": len(r.stdout), "read_ms": inner, "err": r.stderr.decode(errors="replace")[-300:]}))
"""


def free_ports(n: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < n:
        port = random.randint(20000, 29999)
        ok = True
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
        if ok and port not in ports:
            ports.append(port)
    return ports


def start_consul(workdir: Path) -> tuple[subprocess.Popen, int]:
    http, lan, wan, server = free_ports(4)
    config = {
        "server": True,
        "bootstrap_expect": 1,
        "node_name": "bench-server",
        "datacenter": "dc1",
        "data_dir": str(workdir / "data"),
        "bind_addr": "127.0.0.1",
        "advertise_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "ports": {"http": http, "serf_lan": lan, "serf_wan": wan, "server": server, "dns": -1, "grpc": -1},
        "disable_update_check": True,
        "log_level": "warn",
        "performance": {"raft_multiplier": 1},
    }
    (workdir / "consul.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        ["consul", "agent", f"-config-file={workdir / 'consul.json'}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http}/v1/status/leader", timeout=1) as resp:
                if resp.read().strip() not in (b"", b'""'):
                    return proc, http
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit("consul did not elect a leader in 60 s")


def register(port: int, nodes: int, per_node: int, workers: int = 8) -> float:
    jobs = [(n, k) for n in range(nodes) for k in range(per_node)]
    lock = threading.Lock()
    errors: list[str] = []
    started = time.monotonic()

    def worker(mine: list[tuple[int, int]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for n, k in mine:
            node = f"node-{n:05d}"
            sid = f"svc-{k}-{n}"
            body = {
                "Node": node,
                "Address": f"10.{n // 65536}.{(n // 256) % 256}.{n % 256}",
                "Service": {"ID": sid, "Service": f"svc-{k}", "Port": 8000 + k, "Tags": ["bench"]},
                "Check": {"CheckID": f"service:{sid}", "Name": "bench", "Status": "passing", "ServiceID": sid},
                "SkipNodeUpdate": k > 0,
            }
            conn.request("PUT", "/v1/catalog/register", body=json.dumps(body))
            resp = conn.getresponse()
            resp.read()
            if resp.status != 200:
                with lock:
                    errors.append(f"{node}/{sid}: {resp.status}")
        conn.close()

    threads = [threading.Thread(target=worker, args=(jobs[i::workers],)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{len(errors)} registrations failed, e.g. {errors[:3]}")
    return time.monotonic() - started


def measure(port: int, args: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_ADDR"] = f"http://127.0.0.1:{port}"
    out = subprocess.run(
        [sys.executable, "-c", WRAPPER, sys.executable, "-m", "foundation_cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=2000)
    parser.add_argument("--per-node", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()
    if not shutil.which("consul"):
        raise SystemExit("consul is not installed (scripts/install-consul.sh)")
    workdir = Path(tempfile.mkdtemp(prefix="foundation-bench-status-"))
    proc = None
    try:
        proc, port = start_consul(workdir)
        took = register(port, opts.nodes, opts.per_node)
        total = opts.nodes * opts.per_node
        print(f"registered {opts.nodes} nodes / {total} instances (with checks) in {took:.1f}s")
        check = measure(port, ["status", "--json", "--window", "0"])
        data_ok = check["rc"] == 0
        print(f"status --json answer: {check['bytes']} bytes, rc {check['rc']}")
        if not data_ok:
            print(check["err"])
            return 1
        print(f"load average now: {os.getloadavg()[0]:.1f} (other work on this machine inflates wall time)")
        print(f"{'command':40} {'wall p50':>9} {'wall max':>9} {'cpu p50':>8} {'read p50':>9} {'peak RSS':>9}  goal")
        worst_ok = True
        commands = (
            ["status", "--json"],
            ["optimize", "--json"],
            ["status", "--json", "--window", "0"],
            ["optimize", "--json", "--window", "0"],
        )
        # Let Consul finish the Raft snapshot the registrations trigger, then interleave the runs so a burst
        # of load from elsewhere on the machine does not land on one command only.
        time.sleep(5)
        rows: dict[int, list[dict]] = {i: [] for i in range(len(commands))}
        for _ in range(opts.runs):
            for i, args in enumerate(commands):
                rows[i].append(measure(port, args))
        for i, args in enumerate(commands):
            got = rows[i]
            if any(r["rc"] != 0 for r in got):
                print(" ".join(args), "failed:", got[0]["err"])
                return 1
            wall = statistics.median(r["wall"] for r in got)
            cpu = statistics.median(r["cpu"] for r in got)
            rss = max(r["maxrss_kb"] for r in got) / 1024.0
            read = statistics.median(r["read_ms"] for r in got) / 1000.0
            ok = wall <= GOAL_S and rss <= GOAL_MB
            worst_ok &= ok
            print(
                f"{'foundation ' + ' '.join(args):40} {wall:8.2f}s {max(r['wall'] for r in got):8.2f}s "
                f"{cpu:7.2f}s {f'{read:8.2f}s' if args[0] == 'status' else '        -'} {rss:7.1f}MB  {'ok' if ok else 'OVER'} "
                f"(x{wall / GOAL_S:.2f} of {GOAL_S:g}s, x{rss / GOAL_MB:.2f} of {GOAL_MB:g}MB)"
            )
        print(f"load average after: {os.getloadavg()[0]:.1f}")
        return 0 if worst_ok else 1
    finally:
        if proc is not None:
            proc.kill()
            proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
