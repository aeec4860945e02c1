#!/usr/bin/env python3
"""Load: 200 services on a 5-host cluster made by a plain `foundation up`, then 1,000 broadcasts.

    sudo python3 bench/load.py [--hosts 5] [--replicated 150] [--singletons 50]
                               [--messages 1000] [--durable 100] [--senders 1] [--json FILE]

A lab of 5 network-namespace hosts; `foundation up` over SSH (real Consul 1.8.7,
real node agents, the secure defaults: ACLs + TLS). Everything goes through the
CLI (`ps`, `listen`) or the same gateway in-process (specs stored through
ProcessManager, broadcasts through Channels) with the state `up` wrote.

(a) Placement: REPLICATED replicated + SINGLETONS singleton services, each a
    distinct `sleep N` (N encodes the service, so the processes on the hosts are
    a witness independent of `ps`). Measures the time from the first spec stored
    until `ps --json` shows every instance running, and the node agents' RSS and
    CPU (read from /proc of the agent processes in each host) idle, loaded and
    after the stop. Checks one copy per singleton (ps and the real processes) and
    one per node per replicated service; then stops them all and checks that
    nothing is left (ps empty, no `sleep` on any host, no status/lock keys).
(b) Broadcasts: one `foundation listen load --json` per host (in the host, to its
    own Consul agent), started before the burst; MESSAGES broadcasts as fast as
    one sender goes: inline, spilled (4 KB, over the inline budget) and DURABLE on
    a durable channel. Reports per listener: received, duplicates, missing
    (Consul's events are best effort; each agent keeps the last 256 events, so a
    burst can overrun it: that is what durable channels are for), and whether every
    event a raw blocking-query watcher saw on the same agent reached the listener; a
    second `listen loaddur --json` per host must get every durable message exactly
    once (as events, or read from the history when gossip lost them); then a late
    `listen loaddur --since 1h` on every host must replay every durable message.
    Agents' peak RSS is the kernel's high-water mark (VmHWM) of each agent process,
    against the bound its memory guard enforces (256 MiB); the load average is
    printed before and after, since this machine is shared.

Every wait is bounded; the lab (and every process in it) is removed even on failure.
Exit 0 when every check passed, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from foundation_cli.agent import memory_guard  # noqa: E402
from tests.lab.cli import cluster_env, pinned_bundle  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402

# The agent's enforced bound (its memory guard restarts it above this) and its documented goal (docs/placement.md).
RSS_BOUND_MIB = memory_guard.DEFAULT_MAX_MB
RSS_GOAL_MB = 50.0
CLK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


RAW_WATCHER = r"""
import json, sys, urllib.request
url, token = sys.argv[1], sys.stdin.readline().strip()
def get(index):
    q = f"{url}&index={index}&wait=30s" if index else url
    req = urllib.request.Request(q, headers={"X-Consul-Token": token})
    with urllib.request.urlopen(req, timeout=40) as r:
        return r.headers.get("X-Consul-Index"), json.loads(r.read())
index, events = get(None)
seen = {e["ID"] for e in events}
print("ready", flush=True)
for _ in range(100000):
    index, events = get(index)
    for e in events:
        if e["ID"] not in seen:
            seen.add(e["ID"])
            print(e["ID"], e["LTime"], flush=True)
"""


class Checks:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, ok: bool, what: str) -> bool:
        print(("ok   " if ok else "FAIL ") + what, flush=True)
        if not ok:
            self.failures.append(what)
        return ok


def wait_until(fn, timeout: float, interval: float = 1.0):
    """fn() until truthy or timeout; returns the last value (bounded in time and count)."""
    deadline = time.monotonic() + timeout
    value = None
    for _ in range(int(timeout / interval) + 2):
        value = fn()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
    return value


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")[:-1]
    except OSError:
        return []


def agent_pids(hosts) -> dict[str, int]:
    """The node agent's python process in each host (`python3 -m foundation_cli.agent`, as `up` runs it)."""
    out = {}
    for host in hosts:
        for pid in host.pids():
            argv = cmdline(pid)
            if argv and "python" in os.path.basename(argv[0]) and argv[1:3] == ["-m", "foundation_cli.agent"]:
                out[host.name] = pid
    return out


def proc_sample(pid: int) -> tuple[float, int] | None:
    """(CPU seconds, RSS bytes) of one process."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK, rss_pages * PAGE


def agents_peak(pids: dict[str, int]) -> dict[str, float]:
    """Each agent's peak RSS since it started (VmHWM), MiB."""
    return {name: round(memory_guard.memory_of(pid).get("VmHWM", 0) / (1024 * 1024), 1) for name, pid in pids.items()}


def busy() -> str:
    one, five, _fifteen = os.getloadavg()
    return f"load average {one:.1f} (1 min) / {five:.1f} (5 min) on {os.cpu_count()} cores"


def measure_agents(pids: dict[str, int], window: float = 10.0) -> dict[str, dict]:
    """RSS (MB) and CPU (% of one core) of every agent over ``window`` seconds."""
    first = {n: proc_sample(p) for n, p in pids.items()}
    t0 = time.monotonic()
    time.sleep(window)
    span = time.monotonic() - t0
    out = {}
    for name, pid in pids.items():
        a, b = first[name], proc_sample(pid)
        if a is None or b is None:
            out[name] = {"alive": False}
            continue
        out[name] = {"rss_mb": round(b[1] / 1e6, 1), "cpu_pct": round(100 * (b[0] - a[0]) / span, 1)}
    return out


def show_agents(label: str, stats: dict[str, dict]) -> None:
    rss = [s["rss_mb"] for s in stats.values() if "rss_mb" in s]
    cpu = [s["cpu_pct"] for s in stats.values() if "cpu_pct" in s]
    print(
        f"agents {label}: RSS {min(rss, default=0)}–{max(rss, default=0)} MB, "
        f"CPU {min(cpu, default=0)}–{max(cpu, default=0)} % "
        "(" + ", ".join(f"{n} {s.get('rss_mb')} MB/{s.get('cpu_pct')} %" for n, s in stats.items()) + ")",
        flush=True,
    )


def sleeps(hosts) -> dict[int, list[str]]:
    """The real `sleep N` processes per N, with the host each runs on."""
    out: dict[int, list[str]] = {}
    for host in hosts:
        for pid in host.pids():
            argv = cmdline(pid)
            if len(argv) == 2 and os.path.basename(argv[0]) == "sleep" and argv[1].isdigit():
                out.setdefault(int(argv[1]), []).append(host.name)
    return out


def place_and_stop(args, lab, pids, node_names, run, ps, ps_walls, check, figures) -> float:
    """(a): place the services, check the copies, measure the agents, stop them all; the peak agent RSS."""
    from foundation_cli.core.service_spec import ServiceSpec
    from foundation_cli.facades.process_manager import ProcessManager
    from foundation_cli.settings import resolve
    from foundation_cli.tools import consul as consul_tool

    def manager() -> ProcessManager:
        return ProcessManager(consul_tool.connect(resolve(env={})))

    pm = manager()
    services = [(f"rep{i:03d}", "replicated", 1_000_000 + i) for i in range(args.replicated)]
    services += [(f"one{i:03d}", "singleton", 2_000_000 + i) for i in range(args.singletons)]
    expected = args.replicated * len(node_names) + args.singletons
    t0 = time.monotonic()
    for name, mode, n in services:
        pm.start(ServiceSpec(name=name, mode=mode, command=["sleep", str(n)]).validate(), wait=False)
    stored = time.monotonic() - t0
    print(f"stored {len(services)} specs in {stored:.1f} s; waiting for {expected} instances running", flush=True)

    def all_running():
        rows = ps()
        running = [r for r in rows or [] if r["state"] == "running"]
        print(f"     t+{time.monotonic() - t0:5.1f} s: {len(running)}/{expected} running", flush=True)
        return rows if len(running) == expected and len(rows) == expected else None

    rows = wait_until(all_running, 600, interval=2.0)
    placed = time.monotonic() - t0
    figures["place"] = {"specs_stored_s": round(stored, 1), "all_running_s": round(placed, 1)}
    check(rows is not None, f"{expected} instances running after {placed:.1f} s (specs stored in {stored:.1f} s)")
    rows = rows or ps() or []
    by_name: dict[str, list[str]] = {}
    for r in rows:
        if r["state"] == "running":
            by_name.setdefault(r["name"], []).append(r["node"])
    real = wait_until(lambda: (s := sleeps(lab.hosts)) and sum(map(len, s.values())) >= expected and s, 30) or {}
    bad_single = [
        n
        for n, mode, k in services
        if mode == "singleton" and (len(by_name.get(n, [])) != 1 or len(real.get(k, [])) != 1)
    ]
    bad_rep = [
        n
        for n, mode, k in services
        if mode == "replicated" and (sorted(by_name.get(n, [])) != node_names or sorted(real.get(k, [])) != node_names)
    ]
    check(
        not bad_single,
        f"exactly one copy per singleton (ps and real processes): {len(bad_single)} wrong {bad_single[:5]}",
    )
    check(
        not bad_rep,
        f"one copy per node per replicated service (ps and real processes): {len(bad_rep)} wrong {bad_rep[:5]}",
    )
    spread = {n: 0 for n in node_names}
    for n, mode, _k in services:
        if mode == "singleton":
            for node in by_name.get(n, []):
                spread[node] += 1
    figures["singleton_spread"] = spread
    print(f"singletons per node: {spread}", flush=True)
    pids_now = agent_pids(lab.hosts)
    check(pids_now == pids, "the same agent processes (none restarted)")
    figures["agents_loaded"] = loaded = measure_agents(pids)
    show_agents(f"with {len(services)} services, {expected} instances (10 s window)", loaded)
    peak = max((s.get("rss_mb", 0) for s in loaded.values()), default=0)
    figures["ps_wall_s"] = round(max(ps_walls), 2)
    print(f"`ps --json` with {expected} instances: {ps_walls[-1]:.2f} s wall", flush=True)

    t1 = time.monotonic()

    def stop(names: list[str]) -> list:
        m = manager()
        return [m.stop(n, wait=True, timeout=60) for n in names]

    chunks = [[n for n, _m, _k in services][i::4] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        results = [r for part in pool.map(stop, chunks) for r in part]
    unconfirmed = [r["name"] for r in results if r["unconfirmed_nodes"]]
    stopped = time.monotonic() - t1
    left_ps = wait_until(lambda: ps() == [] and [1], 120, interval=2.0)
    wait_until(lambda: not sleeps(lab.hosts), 60)
    left_procs = sleeps(lab.hosts)
    _i, keys = pm.client.kv.get("foundation/", keys=True)
    leftover_keys = [
        k for k in keys or [] if k.startswith(("foundation/status/", "foundation/locks/", "foundation/services/"))
    ]
    figures["stop"] = {"s": round(stopped, 1), "unconfirmed": unconfirmed, "left_keys": leftover_keys[:20]}
    check(not unconfirmed, f"{len(services)} stopped in {stopped:.1f} s; unconfirmed by an agent: {unconfirmed[:5]}")
    check(bool(left_ps), "ps --json is [] afterwards")
    check(not left_procs, f"no sleep process left on any host: {sum(map(len, left_procs.values()))} left")
    check(not leftover_keys, f"no status/lock/spec keys left: {leftover_keys[:5]}")
    figures["agents_after_stop"] = after = measure_agents(pids)
    show_agents("after the stop (10 s window)", after)
    return peak


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=5)
    parser.add_argument("--replicated", type=int, default=150)
    parser.add_argument("--singletons", type=int, default=50)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--durable", type=int, default=100, help="of the messages, on the durable channel")
    parser.add_argument("--spilled", type=int, default=150, help="of the others, 4 KB (spilled to KV)")
    parser.add_argument("--rate", type=float, default=0.0, help="broadcasts per second (0: as fast as the senders go)")
    parser.add_argument("--senders", type=int, default=1, help="threads broadcasting at once")
    parser.add_argument("--skip-placement", action="store_true", help="only the broadcasts")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (network-namespace lab)", file=sys.stderr)
        return 2

    # Under /dev/shm: the lab hosts have a private /tmp, and their listeners need the state file.
    root = Path(tempfile.mkdtemp(prefix="foundation-load-", dir="/dev/shm"))
    os.chmod(root, 0o700)
    env = cluster_env(root, bundle=pinned_bundle(root))  # the package may be edited while this runs
    os.environ.update(FOUNDATION_STATE_DIR=env["FOUNDATION_STATE_DIR"], XDG_CONFIG_HOME=env["XDG_CONFIG_HOME"])
    for var in [v for v in os.environ if v.startswith("CONSUL_")]:
        del os.environ[var]
    check = Checks()
    figures: dict = {"args": vars(args)}

    def run(*argv: str, timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
        t = time.monotonic()
        proc = subprocess.run(
            [sys.executable, "-m", "foundation_cli", *argv],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        return proc, time.monotonic() - t

    ps_walls: list[float] = []

    def ps() -> list[dict] | None:
        proc, took = run("ps", "--json")
        ps_walls.append(took)
        if proc.returncode != 0:
            print(f"     ps exited {proc.returncode}: {proc.stderr.strip()[-300:]}", flush=True)
            return None
        return json.loads(proc.stdout)

    lab = Lab(args.hosts)
    try:
        hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
        (root / "foundation.yaml").write_text(
            f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
        )
        proc, took = run("up", "--json", timeout=900)
        figures["up_s"] = round(took, 1)
        if not check(
            proc.returncode == 0, f"`foundation up` on {args.hosts} hosts: exit {proc.returncode} in {took:.1f} s"
        ):
            print(proc.stderr[-2000:])
            return 1
        state = json.loads((root / "state" / "state.json").read_text())
        print(f"state: {state.get('consul_http_addrs')}", flush=True)
        for host in lab.hosts:  # informational: which LAN HTTPS endpoints the cluster CA verifies
            probe = subprocess.run(
                [
                    "curl",
                    "-sS",
                    "-m",
                    "5",
                    "-o",
                    "/dev/null",
                    "--cacert",
                    str(state.get("cacert")),
                    f"https://{host.ip}:8501/v1/status/leader",
                ],
                capture_output=True,
                text=True,
            )
            print(
                f"  curl --cacert <cluster CA> https://{host.ip}:8501: exit {probe.returncode} {probe.stderr.strip()[:100]}"
            )
        pids = wait_until(lambda: (p := agent_pids(lab.hosts)) and len(p) == args.hosts and p, 60)
        if not check(bool(pids), f"one node agent process per host: {pids}"):
            for host in lab.hosts:
                for pid in host.pids():
                    print(f"  {host.name} {pid}: {' '.join(cmdline(pid))[:200]}")
            return 1
        for name, pid in pids.items():
            print(f"  agent {name}: pid {pid}: {' '.join(cmdline(pid))[:160]}", flush=True)
        node_names = sorted(pids)
        figures["agents_idle"] = idle = measure_agents(pids)
        show_agents("idle (10 s window)", idle)

        # ---------------------------------------------------------------- (a) placement
        if not args.skip_placement:
            peak = place_and_stop(args, lab, pids, node_names, run, ps, ps_walls, check, figures)
        else:
            peak = 0.0

        # ---------------------------------------------------------------- (b) broadcasts
        from foundation_cli.facades.channels import Channels
        from foundation_cli.settings import resolve
        from foundation_cli.tools import consul as consul_tool

        # On a node, a listener talks to its own Consul agent: plain HTTP on loopback (HTTPS on the LAN
        # address of a client node carries an auto_encrypt certificate the cluster CA does not sign).
        on_node = {
            "CONSUL_HTTP_ADDR": "http://127.0.0.1:8500",
            "CONSUL_HTTP_TOKEN": state["token"],
            "NO_COLOR": "1",
            "PYTHONPATH": str(ROOT),  # this checkout's listener, not whatever copy is installed
        }
        raws = {}
        for host in lab.hosts:  # what the node's Consul agent shows, polled as tightly as it allows
            proc = host.popen(
                [sys.executable, "-c", RAW_WATCHER, "http://127.0.0.1:8500/v1/event/list?name=foundation:load"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            proc.stdin.write(state["token"].encode() + b"\n")
            proc.stdin.close()
            line = proc.stdout.readline().decode()
            check(
                line.strip() == "ready",
                f"raw event watcher on {host.name}: {line.strip() or proc.stderr.read()[-300:]}",
            )
            lines: list[bytes] = []
            threading.Thread(target=lambda p=proc, out=lines: out.extend(p.stdout), daemon=True).start()
            raws[host.name] = (proc, lines)

        def start_listeners(channel: str) -> tuple[list, dict[str, list[bytes]]]:
            started = []
            for host in lab.hosts:
                proc = host.popen(
                    [sys.executable, "-m", "foundation_cli", "listen", channel, "--json", "--timeout", "15m"],
                    env=on_node,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                )
                started.append((host, proc))
            out: dict[str, list[bytes]] = {}
            for host, proc in started:
                line = proc.stderr.readline().decode()
                check("listening on" in line, f"`listen {channel}` on {host.name}: {line.strip()[:120]}")
                lines: list[bytes] = []
                reader = threading.Thread(target=lambda p=proc, out=lines: out.extend(p.stdout), daemon=True)
                reader.start()  # read as they come: a full pipe would stall the listener
                out[host.name] = lines
            return started, out

        def stop_listener(proc) -> bytes:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            return proc.stderr.read()

        def messages(lines: list[bytes]) -> list[dict]:
            msgs = []
            for line in b"".join(lines).decode().splitlines():
                try:
                    msgs.append(json.loads(line))
                except ValueError:
                    pass
            return msgs

        listeners, readers = start_listeners("load")
        dur_listeners, dur_readers = start_listeners("loaddur")
        figures["load_before_burst"] = busy()
        print(f"before the burst: {busy()}", flush=True)
        # The plan first (message i: durable, spilled or inline), then SENDERS threads send it, i % SENDERS each.
        big = 4096
        plan: list[tuple[str, bytes]] = []
        n_durable = n_spilled = 0
        for i in range(args.messages):
            if i % (args.messages // max(1, args.durable)) == 0 and n_durable < args.durable:
                plan.append(("durable", f"d{i}".encode() if n_durable % 2 else (f"d{i} ".encode() * 1400)[:big]))
                n_durable += 1
            elif n_spilled < args.spilled and i % 6 == 1:
                plan.append(("load", (f"m{i} ".encode() * 1400)[:big]))
                n_spilled += 1
            else:
                plan.append(("load", f"m{i}".encode()))
        sent: dict[str, str] = {}
        order: dict[str, int] = {}
        durable: list[str] = []
        lock = threading.Lock()
        t2 = time.monotonic()

        def send(first: int) -> None:
            channels = Channels(consul_tool.connect(resolve(env={})))
            channels.sender_node()
            for i in range(first, len(plan), args.senders):
                if args.rate > 0:  # paced: message i leaves at i / rate seconds into the burst
                    time.sleep(max(0.0, t2 + i / args.rate - time.monotonic()))
                kind, payload = plan[i]
                if kind == "durable":
                    message_id = channels.broadcast("loaddur", payload, durable=True).id
                    with lock:
                        durable.append(message_id)
                    continue
                result = channels.broadcast("load", payload)
                with lock:
                    sent[result.id] = "inline" if result.inline else "spilled"
                    order[result.id] = i

        with ThreadPoolExecutor(args.senders) as pool:
            list(pool.map(send, range(args.senders)))
        burst = time.monotonic() - t2
        kinds = {k: list(sent.values()).count(k) for k in ("inline", "spilled")}
        print(
            f"burst: {len(sent)} on `load` ({kinds}) + {len(durable)} durable on `loaddur` in {burst:.1f} s "
            f"({(len(sent) + len(durable)) / burst:.0f}/s)",
            flush=True,
        )
        figures["burst"] = {
            "load": kinds,
            "durable": len(durable),
            "s": round(burst, 1),
            "rate": args.rate,
            "senders": args.senders,
            "per_s": round((len(sent) + len(durable)) / burst),
        }

        figures["load_after_burst"] = busy()
        print(f"after the burst: {busy()}", flush=True)
        # Listeners drain until no new line for 5 s (at most 60 s; durable catch-ups come 2 s late), then stop.
        last = [-1]

        def settled():
            now = sum(len(v) for v in readers.values()) + sum(len(v) for v in dur_readers.values())
            done, last[0] = now == last[0], now
            return done

        wait_until(settled, 60, interval=5.0)
        per_listener = {}
        for host, proc in listeners:
            err = stop_listener(proc)
            msgs = messages(readers[host.name])
            ids = [m["id"] for m in msgs]
            dup = len(ids) - len(set(ids))
            raw_proc, raw_lines = raws[host.name]
            raw_proc.kill()
            raw_ids = [line.split()[0].decode() for line in raw_lines if line.strip()]
            not_handed = set(raw_ids) - {m.get("event_id") for m in msgs}
            lost = sorted(order[i] for i in set(sent) - set(ids))
            thirds = [
                sum(1 for i in lost if k * args.messages / 3 <= i < (k + 1) * args.messages / 3) for k in range(3)
            ]
            got = set(ids) & set(sent)
            foreign = set(ids) - set(sent)
            bad = [m["id"] for m in msgs if m["id"] in sent and not str(m.get("data", "")).startswith("m")]
            row = {
                "received": len(got),
                "inline": sum(1 for i in got if sent[i] == "inline"),
                "spilled": sum(1 for i in got if sent[i] == "spilled"),
                "missing": len(sent) - len(got),
                "missing_by_third_of_burst": thirds,
                "consul_agent_showed": len(set(raw_ids)),
                "shown_but_not_received": len(not_handed),
                "duplicates": dup,
                "foreign": len(foreign),
                "bad_payload": len(bad),
                "stderr": err.decode().strip().splitlines()[-2:],
            }
            per_listener[host.name] = row
            print(f"  listener {host.name}: {json.dumps(row)}", flush=True)
        figures["listeners"] = per_listener
        check(all(r["duplicates"] == 0 for r in per_listener.values()), "no duplicates at any listener")
        check(
            all(r["shown_but_not_received"] == 0 for r in per_listener.values()),
            "every listener received every event its Consul agent showed a raw watcher (by event id)",
        )
        check(
            all(r["foreign"] == 0 and r["bad_payload"] == 0 for r in per_listener.values()),
            "no foreign or corrupt messages",
        )
        missing = sum(r["missing"] for r in per_listener.values())
        print(
            f"Consul events not delivered: {missing} of {len(sent) * len(listeners)} "
            f"(best effort; each agent keeps the last 256 events)",
            flush=True,
        )

        live_durable = {}
        for host, proc in dur_listeners:
            err = stop_listener(proc)
            msgs = messages(dur_readers[host.name])
            ids = [m["id"] for m in msgs]
            vias = [m.get("via") for m in msgs]
            live_durable[host.name] = {
                "received": len(set(ids) & set(durable)),
                "duplicates": len(ids) - len(set(ids)),
                "from_history": vias.count("history"),
                "stderr": err.decode().strip().splitlines()[-2:],
            }
            print(f"  durable listener {host.name}: {json.dumps(live_durable[host.name])}", flush=True)
        figures["durable_live"] = live_durable
        check(
            all(r["received"] == len(durable) and r["duplicates"] == 0 for r in live_durable.values()),
            f"durable channel, live: every listener got all {len(durable)}, each once "
            f"({sum(r['from_history'] for r in live_durable.values())} read from the history after gossip lost them)",
        )

        replay = {}
        for host in lab.hosts:
            proc = host.popen(
                [sys.executable, "-m", "foundation_cli", "listen", "loaddur", "--json", "--since", "1h"]
                + ["--count", str(len(durable)), "--timeout", "120s"],
                env=on_node,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            try:
                out, err = proc.communicate(timeout=180)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            ids = [json.loads(line)["id"] for line in out.decode().splitlines() if line.strip()]
            replay[host.name] = {"replayed": len(set(ids) & set(durable)), "duplicates": len(ids) - len(set(ids))}
        figures["durable_replay"] = replay
        check(
            all(r["replayed"] == len(durable) and r["duplicates"] == 0 for r in replay.values()),
            f"durable channel: every host replays all {len(durable)} (--since 1h): {replay}",
        )
        check(agent_pids(lab.hosts) == pids, "the same agent processes after the burst")
        figures["agents_after_burst"] = burst_stats = measure_agents(pids)
        show_agents("after the burst (10 s window)", burst_stats)
        peak = max([peak] + [s.get("rss_mb", 0) for s in burst_stats.values()])
        figures["peak_rss_mb_sampled"] = peak
        hwm = agents_peak(pids)
        figures["peak_rss_mib_vmhwm"] = hwm
        top = max(hwm.values(), default=0.0)
        print(
            f"agents' peak RSS since start (VmHWM): {hwm}; bound {RSS_BOUND_MIB} MiB (memory guard), "
            f"goal {RSS_GOAL_MB:.0f} MB: peak is {100 * top / RSS_BOUND_MIB:.0f} % of the bound",
            flush=True,
        )
        check(
            0 < top <= RSS_BOUND_MIB,
            f"agent peak RSS {top} MiB within the enforced bound of {RSS_BOUND_MIB} MiB (no agent restarted)",
        )
    finally:
        lab.close()
        if args.json:
            figures["failures"] = check.failures
            Path(args.json).write_text(json.dumps(figures, indent=1))
        shutil.rmtree(root, ignore_errors=True)
    print(("FAILED: " + "; ".join(check.failures)) if check.failures else "all checks passed", flush=True)
    return 1 if check.failures else 0


if __name__ == "__main__":
    sys.exit(main())
