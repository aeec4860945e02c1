#!/usr/bin/env python3
"""Singleton failover: Foundation's agents vs. raw `consul lock`, on the same lab cluster.

Builds a lab (network-namespace hosts, 3 Consul servers, raft_multiplier 1 as
the test lab uses), runs a witness singleton (appends start/beat/stop lines to
a file under /dev/shm that every host shares) and measures, from the moment of
the fault to the first line of the new instance:

  crash     SIGKILL of every process of the holder's host (consul, agent, witness)
  graceful  SIGTERM of the holder's agent (or of its `consul lock`)
  partition the holder's link down; also the overlap (old instance still
            beating after the new one started)

plus the agent's idle RSS and CPU with 20 services placed. Needs root.
Takes minutes. Not part of the test suite.

    python3 bench/failover.py [--trials 10] [--raw-trials 3] [--gossip default|fast]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.test_placement_support import (  # noqa: E402
    agent_passing,
    cli,
    http_json,
    overlaps,
    shared_dir,
    witness_runs,
    write_witness,
)
from tests.lab.consul import ConsulCluster, consul_path  # noqa: E402
from tests.lab.netns import Lab  # noqa: E402

# The baseline (raw `consul lock`, 3-server lab) and goals.
BASE_CRASH = 21.0
BASE_PARTITION_TAKEOVER = 21.0
BASE_PARTITION_OVERLAP = 35.0
GOAL = {"crash": 5.0, "graceful": 1.0, "partition": 10.0, "rss_mb": 50.0, "cpu_pct": 1.0}
FAST_GOSSIP = {"gossip_lan": {"probe_interval": "400ms", "probe_timeout": "200ms", "suspicion_mult": 3}}


def _quiet(helper, *args):
    """A support helper (they raise on errors) while the cluster recovers from a fault: None on errors."""
    try:
        return helper(*args)
    except (AssertionError, OSError, ValueError):
        return None


class BenchCluster(ConsulCluster):
    def __init__(self, lab: Lab, extra: dict) -> None:
        super().__init__(lab)
        self.extra = extra

    def agent_config(self, host, *, server: bool) -> dict:
        config = super().agent_config(host, server=server)
        config.update(self.extra)
        return config


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.lab = Lab(3)
        self.cluster = BenchCluster(self.lab, FAST_GOSSIP if args.gossip == "fast" else {}).start()
        self.hosts = {h.name: h for h in self.cluster.hosts}
        self.addr = {h.name: f"http://{h.ip}:8500" for h in self.cluster.hosts}
        self.agents: dict[str, subprocess.Popen] = {}
        self.raw: dict[str, subprocess.Popen] = {}
        self.dir = shared_dir("foundation-bench-")
        self.logs = Path(self.dir) / "logs"
        self.logs.mkdir()
        self.script, self.witness = write_witness(self.dir)
        self.raw_witness = Path(self.dir) / "raw-witness.log"
        self.raw_witness.touch()
        os.chmod(self.raw_witness, 0o666)

    # -- plumbing ---------------------------------------------------------------------------
    def env(self, avoid: str | None = None) -> dict:
        name = next(n for n in self.hosts if n != avoid)
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
        env["CONSUL_HTTP_ADDR"] = self.addr[name]
        return env

    def start_agent(self, name: str, **extra: str) -> None:
        host = self.hosts[name]
        log = open(self.logs / f"agent-{name}.log", "ab")  # noqa: SIM115
        self.agents[name] = host.popen(
            ["python3", "-m", "foundation_cli", "agent", "run"],
            env={"CONSUL_HTTP_ADDR": self.addr[name], "FOUNDATION_NODE": name, **extra},
            stdout=log,
            stderr=log,
        )
        log.close()

    def start_raw(self, name: str) -> None:
        host = self.hosts[name]
        log = open(self.logs / f"raw-{name}.log", "ab")  # noqa: SIM115
        self.raw[name] = host.popen(
            [consul_path(), "lock", f"-http-addr={self.addr[name]}", "-n=1", "bench/rawlock"]
            + ["python3", str(self.script), str(self.raw_witness)],
            env={"FOUNDATION_NODE": name},
            stdout=log,
            stderr=log,
        )
        log.close()

    def voters(self, name: str) -> int:
        conf = _quiet(http_json, f"{self.addr[name]}/v1/operator/raft/configuration") or {}
        return len([s for s in conf.get("Servers") or [] if s.get("Voter")])

    def healthy(self, agents: bool = True, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            name = next(iter(self.hosts))
            ok = all(self.voters(n) == 3 for n in self.hosts)
            members = _quiet(http_json, f"{self.addr[name]}/v1/agent/members") or []
            ok = ok and len([m for m in members if m["Status"] == 1]) == 3
            if ok and agents:
                ok = len(_quiet(agent_passing, self.addr[name]) or []) == 3
            if ok:
                time.sleep(1.0)  # let autopilot/leadership settle
                return
            time.sleep(0.25)
        raise SystemExit("cluster did not become healthy")

    def restart_node(self, name: str, *, raw: bool = False) -> None:
        self.cluster.start_server(self.hosts[name])
        if raw:
            self.start_raw(name)
        else:
            self.start_agent(name)

    def wait_new_run(self, log: Path, known: set[tuple[int, float]], timeout: float) -> tuple[float, object] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            runs = [r for r in witness_runs(log) if (r.pid, r.first) not in known]
            if runs:
                return runs[0].first, runs[0]
            time.sleep(0.02)
        return None

    def agent_started(self, node: str, pid: int) -> float | None:
        """When the agent logged ``started pid PID`` (the process was spawned)."""
        import datetime
        import re

        path = self.logs / f"agent-{node}.log"
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(rf"(\S+ \S+) INFO agent\[[^]]+\] wit: started pid {pid} ", line)
            if m:
                stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                return stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
        return None

    def current(self, log: Path):
        runs = witness_runs(log)
        live = [r for r in runs if not r.stopped and time.time() - r.last < 0.5]
        return (live[-1] if live else None), {(r.pid, r.first) for r in runs}  # a pid may be reused

    def wait_current(self, log: Path, timeout: float = 60):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            cur, known = self.current(log)
            if cur:
                return cur, known
            time.sleep(0.05)
        raise SystemExit(f"no live instance in {log.name}")

    # -- trials -----------------------------------------------------------------------------
    def trial(self, kind: str, log: Path, *, raw: bool, timeout: float) -> dict:
        cur, known = self.wait_current(log)
        holder = cur.node
        t0 = time.time()
        if kind == "crash":
            self.hosts[holder].crash()
        elif kind == "graceful":
            (self.raw if raw else self.agents)[holder].terminate()
        elif kind == "partition":
            self.hosts[holder].partition()
        found = self.wait_new_run(log, known, timeout)
        result = {"kind": kind, "raw": raw, "from": holder, "took": None, "overlap": 0.0, "t0": t0}
        if found:
            first, run = found
            result["took"] = round(first - t0, 3)
            result["to"] = run.node
            result["pid"] = run.pid
            result["first"] = first
            if not raw:
                spawned = self.agent_started(run.node, run.pid)
                if spawned:
                    result["agent_took"] = round(spawned - t0, 3)  # without the witness's own start-up
        if kind == "partition":
            time.sleep(3.0 if found else 0)
            old = [r for r in witness_runs(log) if (r.pid, r.first) == (cur.pid, cur.first)][0]
            if found:
                result["overlap"] = round(max(0.0, old.last - first), 3)
            result["old_stopped_after"] = round(old.last - t0, 3)
            self.hosts[holder].heal()
        if kind == "crash":
            self.restart_node(holder, raw=raw)
        elif kind == "graceful":
            old_proc = (self.raw if raw else self.agents)[holder]
            try:
                old_proc.wait(30)  # the agent's flock: never two agents for one node
            except subprocess.TimeoutExpired:
                old_proc.kill()
                old_proc.wait(5)
            (self.start_raw if raw else self.start_agent)(holder)
        if not found and raw:
            for name, proc in list(self.raw.items()):  # consul lock exits on 500s: restart the dead ones
                if proc.poll() is not None and name != holder:
                    self.start_raw(name)
        self.healthy(agents=not raw)
        result["overlaps_total"] = len(overlaps(witness_runs(log)))
        print(json.dumps(result), flush=True)
        return result

    def idle(self) -> dict:
        """RSS and CPU of an idle agent with 20 services placed: the agent as deployed (every task),
        and, on another node, one running only the placement task (FOUNDATION_AGENT_TASKS=placement)."""
        env = self.env()
        names = list(self.hosts)
        full, placement_only = names[0], names[1]
        self.agents[placement_only].terminate()
        self.agents[placement_only].wait(20)
        self.start_agent(placement_only, FOUNDATION_AGENT_TASKS="placement")
        for i in range(10):
            cli(["start-singleton", f"idle-s{i}", "--no-wait", "--", "sleep", "100000"], env)
            cli(["start-replicated", f"idle-r{i}", "--no-wait", "--", "sleep", "100000"], env)
        time.sleep(15)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu(pid: int) -> float:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        def rss(pid: int) -> float:
            line = next(ln for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ln.startswith("VmRSS"))
            return int(line.split()[1]) / 1024

        pids = {k: self.agents[n].pid for k, n in (("full", full), ("placement", placement_only))}
        c0, t0 = {k: cpu(p) for k, p in pids.items()}, time.monotonic()
        time.sleep(self.args.idle_seconds)
        c1, t1 = {k: cpu(p) for k, p in pids.items()}, time.monotonic()
        rows = json.loads(cli(["ps", "--json"], env).stdout)
        running = {n: len([r for r in rows if r["state"] == "running" and r["node"] == n]) for n in names}
        out = {
            k: {
                "rss_mb": round(rss(p), 1),
                "cpu_pct": round(100 * (c1[k] - c0[k]) / (t1 - t0), 2),
                "instances_on_node": running[full if k == "full" else placement_only],
            }
            for k, p in pids.items()
        }
        out["instances"] = len([r for r in rows if r["state"] == "running"])
        for i in range(10):
            cli(["stop", f"idle-s{i}", "--no-wait"], env)
            cli(["stop", f"idle-r{i}", "--no-wait"], env)
        return out

    def close(self) -> None:
        for proc in list(self.agents.values()) + list(self.raw.values()):
            if proc.poll() is None:
                proc.kill()
        self.cluster.close()
        self.lab.close()
        if self.args.keep_logs:
            shutil.copytree(self.logs, self.args.keep_logs, dirs_exist_ok=True)
            shutil.copy(self.witness, Path(self.args.keep_logs) / "witness.log")
            shutil.copy(self.raw_witness, Path(self.args.keep_logs) / "raw-witness.log")
        shutil.rmtree(self.dir, ignore_errors=True)


def summary(results: list[dict], kind: str, raw: bool) -> dict:
    rows = [r for r in results if r["kind"] == kind and r["raw"] == raw]
    took = [r["took"] for r in rows if r["took"] is not None]
    spawned = [r["agent_took"] for r in rows if r.get("agent_took") is not None]
    return {
        "trials": len(rows),
        "agent_median": round(statistics.median(spawned), 2) if spawned else None,
        "no_takeover": len(rows) - len(took),
        "median": round(statistics.median(took), 2) if took else None,
        "max": round(max(took), 2) if took else None,
        "overlap_max": round(max((r["overlap"] for r in rows), default=0.0), 2),
        "overlapping_trials": len([r for r in rows if r["overlap"] > 0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=10, help="crash trials for Foundation (≥10 for the figure)")
    ap.add_argument("--graceful-trials", type=int, default=5)
    ap.add_argument("--partition-trials", type=int, default=3)
    ap.add_argument("--raw-trials", type=int, default=3, help="trials of each kind for raw `consul lock`")
    ap.add_argument("--gossip", choices=("default", "fast"), default="default")
    ap.add_argument("--idle-seconds", type=float, default=30.0)
    ap.add_argument("--skip-raw", action="store_true")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy agent/consul-lock logs and witness files here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    bench = Bench(args)
    results: list[dict] = []
    try:
        for name in bench.hosts:
            bench.start_agent(name)
        bench.healthy()
        cli(["start-singleton", "wit", "--", "python3", str(bench.script), str(bench.witness)], bench.env())
        for kind, n in (
            ("crash", args.trials),
            ("graceful", args.graceful_trials),
            ("partition", args.partition_trials),
        ):
            for _ in range(n):
                results.append(bench.trial(kind, bench.witness, raw=False, timeout=60))
        idle = bench.idle()
        cli(["stop", "wit"], bench.env())
        if not args.skip_raw and args.raw_trials:
            for proc in bench.agents.values():
                proc.terminate()
            for name in bench.hosts:
                bench.start_raw(name)
            for kind in ("crash", "graceful", "partition"):
                for _ in range(args.raw_trials if kind != "partition" else 1):
                    results.append(bench.trial(kind, bench.raw_witness, raw=True, timeout=70))
    finally:
        bench.close()

    ours = {k: summary(results, k, False) for k in ("crash", "graceful", "partition")}
    raw = {k: summary(results, k, True) for k in ("crash", "graceful", "partition")}

    def ratio(base, value):
        return f"{base / value:.1f}x faster" if value else "n/a"

    print()
    print(f"Singleton failover, lab of 3 Consul 1.8.7 servers (raft_multiplier 1, gossip {args.gossip})")
    print(f"{'':24}{'Foundation':>26}{'raw consul lock (here)':>26}{'issue baseline':>18}")
    for kind, base in (("crash", BASE_CRASH), ("graceful", None), ("partition", BASE_PARTITION_TAKEOVER)):
        o, r = ours[kind], raw[kind]
        left = f"med {o['median']}s max {o['max']}s (n={o['trials']}{', ' + str(o['no_takeover']) + ' none' if o['no_takeover'] else ''})"
        right = (
            f"med {r['median']}s max {r['max']}s (n={r['trials']}{', ' + str(r['no_takeover']) + ' none' if r['no_takeover'] else ''})"
            if r["trials"]
            else "-"
        )
        print(f"{kind + ' takeover':24}{left:>26}  {right:>26}{(str(base) + ' s') if base else '-':>16}")
    print(
        f"{'partition overlap':24}{str(ours['partition']['overlap_max']) + ' s max':>26}  "
        f"{(str(raw['partition']['overlap_max']) + ' s max') if raw['partition']['trials'] else '-':>26}{str(BASE_PARTITION_OVERLAP) + ' s':>16}"
    )
    for k in ("full", "placement"):
        label = "agent idle (all tasks)" if k == "full" else "agent idle (placement)"
        print(f"{label:24}{str(idle[k]['rss_mb']) + ' MB RSS, ' + str(idle[k]['cpu_pct']) + ' % CPU':>26}")
    print()
    print("Ratios vs. the issue's baseline (raw consul lock: crash 21 s, partition takeover 21 s, overlap ~35 s):")
    print(
        f"  crash median      {ours['crash']['median']} s  -> {ratio(BASE_CRASH, ours['crash']['median'])} (goal ≤ {GOAL['crash']} s)"
    )
    print(f"  graceful median   {ours['graceful']['median']} s  (goal ≤ {GOAL['graceful']} s)")
    print(
        "  until the agent spawned the process (without the witness's start-up): "
        + ", ".join(f"{k} {ours[k]['agent_median']} s" for k in ("crash", "graceful", "partition"))
    )
    print(
        f"  partition median  {ours['partition']['median']} s  -> {ratio(BASE_PARTITION_TAKEOVER, ours['partition']['median'])} (goal ≤ {GOAL['partition']} s)"
    )
    print(
        f"  overlap           {ours['partition']['overlap_max']} s in {ours['partition']['overlapping_trials']} trials (baseline ~35 s in every trial; goal 0)"
    )
    for k in ("full", "placement"):
        i = idle[k]
        print(
            f"  idle agent ({k:9}) {i['rss_mb']} MB, {i['cpu_pct']} % CPU over {args.idle_seconds:.0f}s, "
            f"{i['instances_on_node']} instances on its node, 20 services in the cluster (goal ≤ 50 MB, ≤ 1 %)"
        )
    print(json.dumps({"foundation": ours, "raw_consul_lock": raw, "idle": idle}))


if __name__ == "__main__":
    main()
