#!/usr/bin/env python3
"""The fault campaign: every fault of issue 14, repeated, on one lab cluster, with a witness.

A lab of 3 network-namespace hosts, each a Consul 1.8.7 server
(``raft_multiplier = 1``, as the test lab) with a node agent. A witness
singleton ``wit`` and a witness replicated service ``rep`` append
start/beat/stop lines to files under /dev/shm that every host shares, so two
copies at once (an *overlap*) are visible from outside. Faults, each repeated:

  crash       SIGKILL of every process of the holder's host; recovery = the new
              instance's first line (takeover)
  partition   the holder's link down; recovery = takeover; also when the cut-off
              holder stopped its own copy
  frozen      SIGSTOP of the holder's node agent (GC stall, swap storm, paused
              VM); its fence guard must stop the copy before another node may
              start it; thaw after the takeover: still one copy, the agent
              passing again
  leader      SIGKILL of the Raft leader's Consul while `start-singleton`,
              `stop` or `config set` runs (rotating): one clear line or
              success, and no half-written state
  noquorum    Consul killed on 2 of 3 servers: CLI commands fail within 15 s
              naming the cause, replicated instances keep running, the
              singleton stops; recovery = the singleton back after quorum

Prints one JSON line per trial, then a table (trials, outcome, recovery time,
overlaps). Needs root; takes a long time (≈ 25–40 min with the defaults).

    sudo python3 bench/faults.py [--crash 20] [--partition 10] [--frozen 5]
                                 [--leader 5] [--noquorum 3] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from failover import Bench  # noqa: E402

from tests.integration.test_placement_support import (  # noqa: E402
    cli,
    overlaps,
    witness_runs,
    write_witness,
)

CLI_LIMIT = 15.0  # a CLI command must answer (even with an error) within this when quorum is lost
QUORUM_BACK_LIMIT = 30.0  # the singleton must be back within this after quorum returns
# Crash takeover: the goal, and its baselines (Foundation when the issue was filed: two runs on
# this lab, median 3.4 and 5.0 s, worst 6.5 s; raw `consul lock` on the same lab: 21 s).
CRASH_GOAL = {"median": 3.0, "p95": 5.0}
CRASH_BASELINE = {"foundation_median": 3.4, "consul_lock": 21.0}


def _json(url: str, timeout: float = 2.0):
    """GET a Consul endpoint; None on any error (faults are in progress: errors are expected)."""
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except Exception:  # noqa: BLE001
        return None


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, max(0, int(round(q * (len(ordered) - 1)))))], 2)


class Faults(Bench):
    def __init__(self, args) -> None:
        args.gossip = "default"
        args.keep_logs = args.keep_logs
        super().__init__(args)
        rep_dir = Path(self.dir) / "rep"
        rep_dir.mkdir()
        self.rep_script, self.rep_witness = write_witness(rep_dir)
        self.results: list[dict] = []

    # -- plumbing --------------------------------------------------------------------------------
    def start_agent(self, name: str, **extra: str) -> None:
        """As the base bench, plus this run's PYTHONPATH (a frozen copy of the code) and timing overrides."""
        for var in ("PYTHONPATH", "FOUNDATION_LOCK_DELAY", "FOUNDATION_FENCE_TIMEOUT", "FOUNDATION_FENCE_KILL_GRACE"):
            if os.environ.get(var):  # timing overrides: try tighter (still checked) timings on every agent
                extra.setdefault(var, os.environ[var])
        super().start_agent(name, **extra)

    def healthy(self, agents: bool = True, timeout: float = 120) -> None:
        """Tolerant of errors while the cluster recovers (the support helpers raise by design)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ok = True
            for name in self.hosts:
                conf = _json(f"{self.addr[name]}/v1/operator/raft/configuration") or {}
                ok = ok and len([s for s in conf.get("Servers") or [] if s.get("Voter")]) == 3
            name = next(iter(self.hosts))
            members = _json(f"{self.addr[name]}/v1/agent/members") or []
            ok = ok and len([m for m in members if m["Status"] == 1]) == 3
            if ok and agents:
                entries = _json(f"{self.addr[name]}/v1/health/service/foundation-agent?passing=1") or []
                ok = len(entries) == 3
            if ok:
                time.sleep(1.0)
                return
            time.sleep(0.25)
        raise SystemExit("cluster did not become healthy")

    def leader_host(self) -> str | None:
        for name in self.hosts:
            leader = _json(f"{self.addr[name]}/v1/status/leader")
            if leader:
                ip = leader.rsplit(":", 1)[0]
                return next((h for h in self.hosts if self.hosts[h].ip == ip), None)
        return None

    def kill_consul(self, name: str) -> None:
        proc = self.cluster.procs.get(self.hosts[name].netns)
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def live_singletons(self, log: Path, within: float = 0.5) -> list:
        now = time.time()
        return [r for r in witness_runs(log) if not r.stopped and now - r.last < within]

    def log_events(self, since: float) -> list[tuple[float, str, str]]:
        """(time, node, message) of every agent log line at or after ``since`` (epoch), in time order."""
        import datetime
        import re

        events = []
        for path in sorted(self.logs.glob("agent-*.log")):
            for line in path.read_text(errors="replace").splitlines():
                m = re.match(r"(\S+ \S+) \w+ agent\[([^]]+)\] (.*)", line)
                if not m:
                    continue
                stamp = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f")
                ts = stamp.replace(tzinfo=datetime.timezone.utc).timestamp()
                if ts >= since - 0.002:  # the log keeps milliseconds
                    events.append((ts, m.group(2), m.group(3)))
        return sorted(events)

    def phases(self, r: dict) -> dict:
        """Where a takeover's time went, from the agents' logs (ms stamps) and the witness:

        detect   fault → the first ``destroying its session`` of the holder (another agent's detector;
                 absent when the servers invalidated it themselves)
        acquire  that destroy → ``wit: lock acquired`` on the new holder (lock-delay, the acquire, the
                 fencing-token read)
        spawn    lock acquired → ``wit: started pid`` (fence guard + the command's exec)
        program  started → the witness's first line (the witness's own Python start-up)
        """
        t0, first, node, pid = r.get("t0"), r.get("first"), r.get("to"), r.get("pid")
        if t0 is None or first is None:
            return {}
        events = self.log_events(t0)
        destroy = next((ts for ts, _n, msg in events if "destroying its session" in msg), None)
        acquired = next((ts for ts, n, msg in events if n == node and msg.startswith("wit: lock acquired")), None)
        started = next((ts for ts, n, msg in events if n == node and msg.startswith(f"wit: started pid {pid} ")), None)
        out: dict = {}
        if destroy is not None:
            out["detect"] = round(destroy - t0, 3)
        if acquired is not None:
            out["acquire"] = round(acquired - (destroy if destroy is not None else t0), 3)
        if started is not None and acquired is not None:
            out["spawn"] = round(started - acquired, 3)
        if started is not None:
            out["program"] = round(first - started, 3)
        return out

    def record(self, result: dict) -> dict:
        result["overlaps_total"] = len(overlaps(witness_runs(self.witness)))
        self.results.append(result)
        print(json.dumps(result), flush=True)
        return result

    # -- faults ----------------------------------------------------------------------------------
    def crash_or_partition(self, kind: str) -> dict:
        cur, _known = self.wait_current(self.witness)
        was_leader = self.leader_host() == cur.node  # takeover then waits for a Raft election too
        r = self.trial(kind, self.witness, raw=False, timeout=60)  # prints its own line
        r["fault"] = kind
        r["holder_was_leader"] = was_leader and r.get("from") == cur.node
        print(json.dumps({"trial": len(self.results) + 1, "holder_was_leader": r["holder_was_leader"]}), flush=True)
        r["ok"] = r["took"] is not None and r["overlap"] == 0
        r["recovery"] = r["took"]
        r["phases"] = self.phases(r)
        print(json.dumps({"trial": len(self.results) + 1, "phases": r["phases"]}), flush=True)
        self.results.append(r)
        return r

    def frozen(self) -> dict:
        cur, known = self.wait_current(self.witness)
        holder = cur.node
        agent = self.agents[holder]
        t0 = time.time()
        os.kill(agent.pid, signal.SIGSTOP)
        result = {"fault": "frozen", "from": holder}
        try:
            found = self.wait_new_run(self.witness, known, 60)
            old = next(r for r in witness_runs(self.witness) if (r.pid, r.first) == (cur.pid, cur.first))
            result["old_stopped_after"] = round(old.last - t0, 3)
            if found:
                first, run = found
                result["recovery"] = round(first - t0, 3)
                result["to"] = run.node
                time.sleep(1.0)
                old = next(r for r in witness_runs(self.witness) if (r.pid, r.first) == (cur.pid, cur.first))
                result["overlap"] = round(max(0.0, old.last - first), 3)
            else:
                result["recovery"] = None
                result["overlap"] = 0.0
        finally:
            os.kill(agent.pid, signal.SIGCONT)
        # Thawed: it notices it was fenced, re-contends; still exactly one copy, the agent passing again.
        thaw = time.time()
        self.healthy()
        time.sleep(3.0)
        live = self.live_singletons(self.witness)
        result["after_thaw_live"] = len(live)
        result["thaw_recovered_s"] = round(time.time() - thaw, 1)
        result["ok"] = result.get("recovery") is not None and result["overlap"] == 0 and len(live) == 1
        return self.record(result)

    def leader_kill(self, index: int) -> dict:
        op = ("start-singleton", "stop", "config set")[index % 3]
        name = f"lk{index}"
        leader = self.leader_host()
        via = next(n for n in self.hosts if n != leader)
        env = self.env(avoid=leader)
        env["CONSUL_HTTP_ADDR"] = self.addr[via]
        if op == "stop":
            cli(["start-singleton", name, "--", "sleep", "100000"], env)
        argv = {
            "start-singleton": ["start-singleton", name, "--", "sleep", "100000"],
            "stop": ["stop", name],
            "config set": ["config", "set", f"bench.{name}", "v1"],
        }[op]
        proc = subprocess.Popen(
            [sys.executable, "-m", "foundation_cli", *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        time.sleep(random.uniform(0.05, 0.35))  # somewhere inside the command (start-up ≈ 0.2–0.4 s)
        t0 = time.time()
        self.kill_consul(leader)
        try:
            out, err = proc.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        took = time.time() - t0
        err_text = err.decode(errors="replace").strip()
        result = {
            "fault": "leader",
            "op": op,
            "leader": leader,
            "rc": proc.returncode,
            "cli_s": round(took, 2),
            "stderr": err_text.splitlines()[-3:],
            "traceback": "Traceback" in err_text,
        }
        self.cluster.start_server(self.hosts[leader])
        self.healthy()
        # The state, once settled: whatever the command said is what is there, and nothing half-done.
        spec = _json(f"{self.addr[via]}/v1/kv/foundation/services/{name}")
        running = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            rows = json.loads(cli(["ps", "--json"], env).stdout or "[]")
            running = [r for r in rows if r["name"] == name and r["state"] == "running"]
            if (spec is None and not running) or (spec is not None and len(running) == 1):
                break
            time.sleep(0.5)
        lock = _json(f"{self.addr[via]}/v1/kv/foundation/locks/{name}")
        config = _json(f"{self.addr[via]}/v1/kv/foundation/config/bench.{name}")
        if op == "start-singleton":
            consistent = (spec is not None and len(running) == 1) or (spec is None and not running)
            succeeded = spec is not None and len(running) == 1
        elif op == "stop":
            consistent = (spec is None and not running and not lock) or (spec is not None and len(running) == 1)
            succeeded = spec is None and not running
        else:
            consistent = True
            succeeded = config is not None
        said_ok = proc.returncode == 0
        one_line = said_ok or (len([ln for ln in err_text.splitlines() if ln.strip()]) <= 2)
        result.update(
            spec=spec is not None,
            running=len(running),
            consistent=consistent,
            matches=said_ok == succeeded or not said_ok,  # failure may still have landed: re-run is idempotent
            ok=consistent and (not said_ok or succeeded) and one_line and not result["traceback"],
        )
        result["recovery"] = result["cli_s"]
        # leave nothing behind
        cli(["stop", name], env, check=False)
        if op == "config set":
            cli(["config", "unset", f"bench.{name}"], env, check=False)
        return self.record(result)

    def no_quorum(self) -> dict:
        cur, _known = self.wait_current(self.witness)
        keep = cur.node  # the holder keeps its server: the singleton must still stop (no quorum to prove ownership)
        down = [n for n in self.hosts if n != keep]
        env = self.env()
        env["CONSUL_HTTP_ADDR"] = self.addr[keep]
        t0 = time.time()
        for name in down:
            self.kill_consul(name)
        result: dict = {"fault": "noquorum", "kept": keep}
        # The singleton stops (nobody can prove ownership).
        stopped_at = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if not self.live_singletons(self.witness):
                stopped_at = time.time()
                break
            time.sleep(0.05)
        result["singleton_stopped_s"] = round(stopped_at - t0, 2) if stopped_at else None
        # CLI commands: fail within CLI_LIMIT naming the cause.
        cmds = {}
        for argv in (["ps"], ["config", "set", "bench.nq", "x"], ["start-singleton", "nq", "--", "sleep", "1000"]):
            t = time.monotonic()
            proc = cli(argv, env, check=False, timeout=60)
            text = (proc.stderr or "").strip()
            cmds[argv[0] if argv[0] != "config" else "config set"] = {
                "rc": proc.returncode,
                "s": round(time.monotonic() - t, 2),
                "says": next((ln for ln in text.splitlines() if ln.startswith("error:")), text[-160:])[:200],
                "traceback": "Traceback" in text,
            }
        result["cli"] = cmds
        cli_ok = all(
            c["rc"] != 0
            and c["s"] <= CLI_LIMIT
            and not c["traceback"]
            and ("leader" in c["says"].lower() or "quorum" in c["says"].lower())
            for c in cmds.values()
        )
        # Replicated instances keep running on every node.
        time.sleep(1.0)
        now = time.time()
        rep_live = {r.node for r in witness_runs(self.rep_witness) if not r.stopped and now - r.last < 0.5}
        result["replicated_live"] = len(rep_live)
        # Quorum back: the singleton is back within QUORUM_BACK_LIMIT.
        for name in down:
            self.cluster.start_server(self.hosts[name])
        known = {(r.pid, r.first) for r in witness_runs(self.witness)}
        back = None
        deadline = time.monotonic() + 120
        quorum_at = None
        while time.monotonic() < deadline:
            if quorum_at is None and self.leader_host():
                quorum_at = time.time()
            runs = [r for r in witness_runs(self.witness) if (r.pid, r.first) not in known]
            if runs:
                back = runs[0].first
                break
            time.sleep(0.05)
        result["quorum_after_restart_s"] = round(quorum_at - t0, 2) if quorum_at else None
        result["recovery"] = round(back - quorum_at, 2) if back and quorum_at else None
        result["ok"] = (
            cli_ok
            and result["singleton_stopped_s"] is not None
            and result["replicated_live"] == 3
            and result["recovery"] is not None
            and result["recovery"] <= QUORUM_BACK_LIMIT
        )
        self.healthy()
        cli(["stop", "nq"], self.env(), check=False)
        return self.record(result)


def summarize(results: list[dict], fault: str, holder_was_leader: bool | None = None) -> dict:
    rows = [r for r in results if r.get("fault") == fault]
    if holder_was_leader is not None:
        rows = [r for r in rows if bool(r.get("holder_was_leader")) == holder_was_leader]
        fault = f"{fault} ({'holder was leader' if holder_was_leader else 'holder not leader'})"
    rec = [r["recovery"] for r in rows if r.get("recovery") is not None]
    phases = {}
    for key in ("detect", "acquire", "spawn", "program"):
        values = [r["phases"][key] for r in rows if key in (r.get("phases") or {})]
        if values:
            phases[key] = round(statistics.median(values), 3)
    return {
        "phase_medians": phases,
        "fault": fault,
        "trials": len(rows),
        "ok": len([r for r in rows if r.get("ok")]),
        "recovery_median": round(statistics.median(rec), 2) if rec else None,
        "recovery_p95": pct(rec, 0.95),
        "recovery_max": round(max(rec), 2) if rec else None,
        "overlapping_trials": len([r for r in rows if (r.get("overlap") or 0) > 0]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crash", type=int, default=20)
    ap.add_argument("--partition", type=int, default=10)
    ap.add_argument("--frozen", type=int, default=5)
    ap.add_argument("--leader", type=int, default=5, help="leader kills per operation (3 operations)")
    ap.add_argument("--noquorum", type=int, default=3)
    ap.add_argument("--only", help="comma-separated faults to run (crash,partition,frozen,leader,noquorum)")
    ap.add_argument("--json", metavar="FILE", help="write every trial and the summary here")
    ap.add_argument("--keep-logs", metavar="DIR", help="copy agent logs and witness files here")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    only = set((args.only or "crash,partition,frozen,leader,noquorum").split(","))
    bench = Faults(args)
    started = time.time()
    try:
        for name in bench.hosts:
            bench.start_agent(name)
        bench.healthy()
        env = bench.env()
        cli(["start-singleton", "wit", "--", "python3", str(bench.script), str(bench.witness)], env)
        cli(["start-replicated", "rep", "--", "python3", str(bench.rep_script), str(bench.rep_witness)], env)
        plan = []
        if "frozen" in only:
            plan += [("frozen", None)] * args.frozen
        if "leader" in only:
            plan += [("leader", i) for i in range(args.leader * 3)]
        if "noquorum" in only:
            plan += [("noquorum", None)] * args.noquorum
        if "crash" in only:
            plan += [("crash", None)] * args.crash
        if "partition" in only:
            plan += [("partition", None)] * args.partition
        for fault, arg in plan:
            try:
                if fault in ("crash", "partition"):
                    bench.crash_or_partition(fault)
                elif fault == "frozen":
                    bench.frozen()
                elif fault == "leader":
                    bench.leader_kill(arg)
                else:
                    bench.no_quorum()
            except (SystemExit, AssertionError, subprocess.TimeoutExpired) as exc:
                bench.record({"fault": fault, "ok": False, "error": str(exc)[:300]})
                bench.healthy(timeout=180)
        total_overlaps = overlaps(witness_runs(bench.witness))
    finally:
        bench.close()
    summary = [summarize(bench.results, f) for f in ("crash", "partition", "frozen", "leader", "noquorum")]
    summary += [summarize(bench.results, "crash", flag) for flag in (False, True)]
    print()
    print(f"Fault campaign, 3 Consul 1.8.7 servers (raft_multiplier 1), {time.time() - started:.0f} s")
    print(f"{'fault':36}{'trials':>8}{'ok':>6}{'recovery median':>18}{'p95':>8}{'max':>8}{'overlaps':>10}")
    for s in summary:
        if not s["trials"]:
            continue
        print(
            f"{s['fault']:36}{s['trials']:>8}{s['ok']:>6}{str(s['recovery_median']) + ' s':>18}"
            f"{str(s['recovery_p95']) + ' s':>8}{str(s['recovery_max']) + ' s':>8}{s['overlapping_trials']:>10}"
        )
    for s in summary:
        if s["trials"] and s["phase_medians"]:
            parts = ", ".join(f"{k} {v:.3f} s" for k, v in s["phase_medians"].items())
            print(f"  where the time went ({s['fault']}, medians): {parts}")
    crash = next(s for s in summary if s["fault"] == "crash")
    if crash["recovery_median"]:
        med, p95 = crash["recovery_median"], crash["recovery_p95"]
        print(
            f"crash takeover: median {med} s (goal ≤ {CRASH_GOAL['median']} s: "
            f"{'met' if med <= CRASH_GOAL['median'] else 'MISSED'}), p95 {p95} s (goal ≤ {CRASH_GOAL['p95']} s: "
            f"{'met' if p95 is not None and p95 <= CRASH_GOAL['p95'] else 'MISSED'}); "
            f"vs the issue's baseline median {CRASH_BASELINE['foundation_median']} s: "
            f"{CRASH_BASELINE['foundation_median'] / med:.2f}x, vs raw consul lock {CRASH_BASELINE['consul_lock']} s: "
            f"{CRASH_BASELINE['consul_lock'] / med:.1f}x"
        )
    load = os.getloadavg()
    print(f"load average at the end: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (2 cores)")
    print(f"overlapping singleton runs over the whole campaign: {len(total_overlaps)}")
    out = {"trials": bench.results, "summary": summary, "overlaps": len(total_overlaps)}
    print(json.dumps({"summary": summary, "overlaps": len(total_overlaps)}))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
