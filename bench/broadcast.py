#!/usr/bin/env python3
"""Broadcast fan-out latency to 5 nodes' listeners, ours vs raw Consul events; `discover` on 1,000 instances.

Needs root (network-namespace lab, like the lab tests). Builds a 5-server
Consul cluster on 5 lab hosts, then:

1. raw: on every host a minimal blocking-query watcher of /v1/event/list
   (prints each new event id once); the bench fires N events at host 0.
2. ours: on every host `python3 -m foundation_cli listen bench --json`;
   the bench broadcasts N messages through the Channels facade (inline),
   then N more of 4 KB (through the KV spill), once storing the payload before firing the event
   (the order before) and once firing while storing (now), side by side.

Latency = time a listener's line reaches the bench − time just before the
fire request (one machine, one clock; both sides are read the same way).
Then registers 1,000 instances of one service through /v1/catalog/register
and times `foundation discover` (table and --json) and `foundation services`:
wall time, and the client's CPU time (user+sys, which a busy machine inflates less).

Issue 5 baseline (raw events, blocking-query watchers on 5 hosts): p50 27 ms,
p99 260 ms, none missing. Goal: the facade adds <= 10 ms at p50, loses nothing.

Usage: sudo python3 bench/broadcast.py [--messages 100] [--interval 0.05]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BASELINE_P50_MS = 27.0
BASELINE_P99_MS = 260.0

RAW_WATCHER = r"""
import json, sys, time, urllib.request
addr, name = sys.argv[1], sys.argv[2]
index, seen = None, set()
def get(index):
    url = f"{addr}/v1/event/list?name={name}" + (f"&index={index}&wait=30s" if index else "")
    with urllib.request.urlopen(url, timeout=40) as r:
        return r.headers.get("X-Consul-Index"), json.loads(r.read())
index, events = get(None)
seen = {e["ID"] for e in events}
print("ready", flush=True)
while True:
    index, events = get(index)
    for e in events:
        if e["ID"] not in seen:
            seen.add(e["ID"])
            print(e["ID"], flush=True)
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


class Reader(threading.Thread):
    """Stamp every stdout line of a listener with its arrival time."""

    def __init__(self, proc: subprocess.Popen, key) -> None:
        super().__init__(daemon=True)
        self.proc, self.key = proc, key
        self.lines: list[tuple[float, str]] = []

    def run(self) -> None:
        for raw in self.proc.stdout:
            self.lines.append((time.time(), raw.decode().strip()))


def start_listeners(hosts, argv_for, ready_on: str) -> list[tuple[subprocess.Popen, Reader]]:
    out = []
    for host in hosts:
        proc = host.popen(
            argv_for(host),
            # This checkout's code, not whatever copy is installed.
            env={"CONSUL_HTTP_ADDR": f"http://{host.ip}:8500", "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out.append(proc)
    readers = []
    for proc in out:
        stream = proc.stdout if ready_on == "stdout" else proc.stderr
        line = stream.readline().decode()
        if not line:
            raise RuntimeError("listener died: " + proc.stderr.read().decode()[-2000:])
        reader = Reader(proc, None)
        reader.start()
        readers.append((proc, reader))
    return readers


def stop(readers) -> None:
    for proc, _reader in readers:
        proc.kill()
        proc.wait()


def latencies(readers, sent: dict[str, float], id_of) -> tuple[list[float], int, int]:
    lat, missing, dupes = [], 0, 0
    for _proc, reader in readers:
        got: dict[str, float] = {}
        for stamp, line in reader.lines:
            key = id_of(line)
            if key in got:
                dupes += 1
                continue
            got[key] = stamp
        for key, t0 in sent.items():
            if key in got:
                lat.append((got[key] - t0) * 1000.0)
            else:
                missing += 1
    return lat, missing, dupes


def report(label: str, lat: list[float], missing: int, dupes: int, expected: int) -> dict:
    row = {
        "label": label,
        "p50_ms": round(percentile(lat, 50), 1),
        "p99_ms": round(percentile(lat, 99), 1),
        "max_ms": round(max(lat), 1) if lat else None,
        "mean_ms": round(statistics.fmean(lat), 1) if lat else None,
        "received": len(lat),
        "expected": expected,
        "missing": missing,
        "duplicates": dupes,
    }
    print(
        f"{label:<28} p50 {row['p50_ms']:>6} ms  p99 {row['p99_ms']:>6} ms  max {row['max_ms']:>6} ms  "
        f"received {len(lat)}/{expected}  missing {missing}  duplicates {dupes}",
        flush=True,
    )
    return row


def bench_raw(cluster, n: int, interval: float) -> dict:
    readers = start_listeners(
        cluster.hosts, lambda h: ["python3", "-c", RAW_WATCHER, f"http://{h.ip}:8500", "raw-bench"], "stdout"
    )
    sent: dict[str, float] = {}
    send_ms: list[float] = []
    try:
        for i in range(n):
            t0 = time.time()
            req = urllib.request.Request(
                f"{cluster.http_addrs[0]}/v1/event/fire/{urllib.parse.quote('raw-bench')}",
                data=f"m{i}".encode(),
                method="PUT",
            )
            with urllib.request.urlopen(req, timeout=10) as r:
                sent[json.loads(r.read())["ID"]] = t0
            send_ms.append((time.time() - t0) * 1000.0)
            time.sleep(interval)
        time.sleep(3)
    finally:
        stop(readers)
    lat, missing, dupes = latencies(readers, sent, lambda line: line)
    row = report("raw consul events", lat, missing, dupes, n * len(cluster.hosts))
    row["send_p50_ms"] = round(percentile(send_ms, 50), 1)
    print(f"{'':<28} (sender side: p50 {row['send_p50_ms']} ms per fire request)", flush=True)
    return row


def bench_ours(cluster, n: int, interval: float, size: int, label: str, *, store_first: bool = False) -> dict:
    from foundation_cli.facades.channels import Channels
    from foundation_cli.settings import resolve
    from foundation_cli.tools import consul as consul_tool

    channel = f"bench{size}"
    readers = start_listeners(
        cluster.hosts,
        lambda h: ["python3", "-m", "foundation_cli", "listen", channel, "--json", "--timeout", "10m"],
        "stderr",
    )
    channels = Channels(consul_tool.connect(resolve(consul_addr=cluster.http_addrs[0], env={})))
    channels.sender_node()  # once, as a long-running sender would
    if store_first:  # the order before: store the spilled payload, then fire (their sum reaches listeners)

        def store_then_fire(event, wire, key, full, **filters):
            channels.client.kv.put(key, full)
            return channels.client.event.fire(event, wire, **filters)

        channels._fire_while_storing = store_then_fire
    sent: dict[str, float] = {}
    send_ms: list[float] = []
    try:
        for i in range(n):
            payload = (f"m{i} ".encode() * (size // 3 + 1))[:size] if size else f"m{i}".encode()
            t0 = time.time()
            result = channels.broadcast(channel, payload, now=t0)
            send_ms.append((time.time() - t0) * 1000.0)
            sent[result.id] = t0
            time.sleep(interval)
        time.sleep(3)
    finally:
        stop(readers)
    lat, missing, dupes = latencies(readers, sent, lambda line: json.loads(line)["id"])
    row = report(label, lat, missing, dupes, n * len(cluster.hosts))
    row["send_p50_ms"] = round(percentile(send_ms, 50), 1)
    print(f"{'':<28} (broadcaster side: p50 {row['send_p50_ms']} ms per broadcast() call)", flush=True)
    return row


def bench_discover(cluster, instances: int = 1000, runs: int = 5) -> dict:
    import requests

    session = requests.Session()
    t0 = time.time()
    for i in range(instances):
        node = f"bench-node-{i // 10:03d}"
        body = {
            "Node": node,
            "Address": f"10.{i // 250}.{i % 250}.1",
            "Service": {
                "ID": f"big-{i}",
                "Service": "big",
                "Port": 10000 + i,
                "Tags": ["bench"],
                "Meta": {"i": str(i)},
            },
            "Check": {
                "CheckID": f"big-{i}",
                "Name": "bench",
                "Status": "passing" if i % 7 else "critical",
                "ServiceID": f"big-{i}",
            },
        }
        session.put(
            f"{cluster.http_addrs[0]}/v1/catalog/register", data=json.dumps(body), timeout=10
        ).raise_for_status()
    print(f"registered {instances} instances of 'big' via /v1/catalog/register in {time.time() - t0:.1f} s", flush=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_HTTP")}
    env["CONSUL_HTTP_ADDR"] = cluster.http_addrs[0]
    env["COLUMNS"] = "160"
    results = {}
    for label, argv in (
        (
            "curl /v1/health/service/big",
            ["curl", "-sS", "-o", "/dev/null", f"{cluster.http_addrs[0]}/v1/health/service/big"],
        ),
        ("foundation discover big", [sys.executable, "-m", "foundation_cli", "discover", "big", "--no-color"]),
        ("foundation discover big --json", [sys.executable, "-m", "foundation_cli", "discover", "big", "--json"]),
        ("foundation services", [sys.executable, "-m", "foundation_cli", "services", "--no-color"]),
        ("foundation --version (startup)", [sys.executable, "-m", "foundation_cli", "--version"]),
    ):
        times, cpu = [], []
        for _ in range(runs):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            t0 = time.perf_counter()
            proc = subprocess.run(argv, env=env, capture_output=True, timeout=60)
            times.append((time.perf_counter() - t0) * 1000.0)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu.append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) * 1000.0)
            if proc.returncode != 0:
                raise RuntimeError(f"{label}: {proc.stderr.decode()[-500:]}")
        results[label] = {"wall_ms": round(statistics.median(times), 1), "cpu_ms": round(statistics.median(cpu), 1)}
        print(
            f"{label:<34} median wall {results[label]['wall_ms']:>7.1f} ms, client CPU {results[label]['cpu_ms']:>6.1f} ms"
            f" over {runs} runs",
            flush=True,
        )
    check = subprocess.run(
        [sys.executable, "-m", "foundation_cli", "discover", "big", "--json"], env=env, capture_output=True, timeout=60
    )
    data = json.loads(check.stdout)
    print(f"discover big --json: {data['count']} instances, health {data['health']}", flush=True)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.05)
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--only", choices=("broadcast", "discover"), help="Run one half of the bench.")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network-namespace lab)", file=sys.stderr)
        return 2
    from tests.lab import procs
    from tests.lab.consul import ConsulCluster
    from tests.lab.netns import Lab

    lab = Lab(args.hosts)
    try:
        cluster = ConsulCluster(lab, servers=args.hosts).start()
        print(
            f"lab: {args.hosts}-server Consul on {[h.ip for h in cluster.hosts]}, leader {cluster.leader()}", flush=True
        )
        print(
            f"{args.messages} messages per round, one every {args.interval * 1000:.0f} ms, {args.hosts} listeners\n",
            flush=True,
        )
        if args.only != "discover":
            raw = bench_raw(cluster, args.messages, args.interval)
            ours = bench_ours(cluster, args.messages, args.interval, 0, "foundation listen (inline)")
            before = bench_ours(
                cluster, args.messages, args.interval, 4096, "4 KB, KV then event (before)", store_first=True
            )
            spill = bench_ours(cluster, args.messages, args.interval, 4096, "foundation listen (4 KB, KV)")
            print()
            for row in (raw, ours, before, spill):
                print(
                    f"{row['label']:<28} p50 {row['p50_ms']} ms (baseline {BASELINE_P50_MS}), "
                    f"p99 {row['p99_ms']} ms (baseline {BASELINE_P99_MS}), missing {row['missing']}"
                )
            print(
                f"facade overhead at p50 vs raw on this lab: inline {ours['p50_ms'] - raw['p50_ms']:+.1f} ms, "
                f"4 KB via KV {spill['p50_ms'] - raw['p50_ms']:+.1f} ms (goal <= +10 ms, nothing lost; "
                f"storing before firing: {before['p50_ms'] - raw['p50_ms']:+.1f} ms)\n"
            )
        if args.only != "broadcast":
            bench_discover(cluster)
        cluster.close()
    finally:
        lab.close()
        procs.close_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
