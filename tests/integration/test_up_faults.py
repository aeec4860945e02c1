"""`foundation up` / `down` under faults, over real SSH on a 5-host lab (one module-scoped lab, in order):

1. SSH auth refused on one host (its authorized key gone) and no consul on another: the other hosts
   finish, exit 7 naming the host; `--consul-binary` uploads consul to the host without one; with the
   key back, a re-run completes.
2. `down --purge` over SSH: nothing left running, Consul's data gone on every host.
3. The SSH connection to one host cut in the middle of `up` (its session's sshd killed while `up`
   writes that host's Consul config) with its key removed at the same moment: the other four finish,
   exit 7 naming the host; a re-run while the key is still refused fails that host on authentication
   (exit 7 again); with the key back, a re-run completes. `up` holds one SSH connection per host for
   the whole run and never reconnects, so authentication itself cannot fail half-way: a lost
   connection is the mid-run form of this fault.
4. `up` killed (SIGKILL) in a chosen phase of a fresh 5-host bootstrap (:data:`KILL_POINTS`), then
   re-run: it converges (one consul, one agent, one supervising loop and one pid file each per host,
   five alive members, a correct state file) and right after the kill there is never more than one
   consul or agent on a host. The kill is not a delay: it is sent when `up -v` prints the line that
   starts the phase (or, for the plan, when its first server certificate appears in the state dir),
   and what the kill left behind is checked to be that phase's. CI runs :data:`CI_POINTS` and the
   client and the server cut; ``FOUNDATION_UP_FAULTS=all`` runs every point (docs/reliability.md).
   A cut server of the new cluster makes `up` stop at once (exit 7, naming it), still with every
   host's report (``--json``); with the key back a re-run forms the cluster, as its hint says.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest

from tests.lab.cli import cluster_env, pinned_bundle
from tests.lab.netns import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]
SCHEMA = Path(__file__).resolve().parents[2] / "foundation_cli" / "schemas" / "up.json"


class Ctx:
    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab, self.root = lab, root
        self.env = cluster_env(root)
        hosts = "".join(f"  - {h.ip}\n" for h in lab.hosts)
        (root / "foundation.yaml").write_text(
            f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
        )

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "foundation_cli", *args]

    def run(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            self.argv(*args), cwd=self.root, env=self.env, capture_output=True, text=True, timeout=300
        )


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the lab needs root")
    root = tmp_path_factory.mktemp("up-faults")
    pinned = pinned_bundle(root)
    lab = Lab(5)
    c = Ctx(lab, root)
    c.env["FOUNDATION_AGENT_BUNDLE"] = str(pinned)
    try:
        yield c
    finally:
        lab.close()


def processes(host) -> tuple[int, int]:
    """(consul agents, foundation agents) running on ``host`` (not counting their supervising shells)."""
    consul = agents = 0
    for pid in host.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if cmd.startswith(b"sh ") or cmd.startswith(b"env "):
            continue
        consul += b"consul agent" in cmd
        agents += b"-m foundation_cli.agent" in cmd
    return consul, agents


def test_auth_refused_on_one_host_others_finish_then_a_rerun_completes(ctx):
    refused, bare = ctx.lab.hosts[3], ctx.lab.hosts[4]
    keys = refused.path("/root/.ssh/authorized_keys")
    saved = keys.read_text()
    keys.write_text("")
    bare.exec("rm -f /usr/local/bin/consul")  # only in this host's overlay: it has no consul now
    try:
        proc = ctx.run("up", "--json", "--consul-binary", shutil.which("consul") or "/usr/local/bin/consul")
    finally:
        keys.write_text(saved)
    assert proc.returncode == 7, proc.stderr
    assert "Traceback" not in proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]  # in foundation.yaml's order
    assert hosts[3]["state"] == "failed", hosts[3]
    assert "auth" in (hosts[3]["error"] or "").lower(), hosts[3]
    assert [h["state"] != "failed" for h in hosts] == [True, True, True, False, True], hosts
    steps = {s["step"]: s for s in hosts[4]["steps"]}
    assert steps["consul binary"]["state"] == "uploaded", steps["consul binary"]
    assert f"1 of 5 hosts failed: {refused.ip}" in proc.stderr

    again = ctx.run("up", "--json")
    assert again.returncode == 0, again.stderr
    assert all(processes(h) == (1, 1) for h in ctx.lab.hosts), [processes(h) for h in ctx.lab.hosts]


def test_down_purge_over_ssh_leaves_nothing(ctx):
    proc = ctx.run("down", "--purge")
    assert proc.returncode == 0, proc.stderr
    for h in ctx.lab.hosts:
        assert processes(h) == (0, 0), h.name
        assert not h.path("/var/lib/foundation/consul").exists(), h.name
    assert not (ctx.root / "state" / "state.json").exists()


# -- watching `up` ---------------------------------------------------------------------------------


@dataclass
class Watched:
    returncode: int
    stdout: str
    lines: list[str]  # stderr, `up -v`'s progress lines among them
    fired_at: float | None  # seconds after the start when the action ran
    took: float


def watch_up(ctx: Ctx, *args: str, line: str | None = None, glob: str | None = None, action, timeout=240.0):
    """Run `up -v ARGS` and call ``action(proc)`` once, the moment stderr shows ``line`` or a file
    matching ``glob`` appears in the operator's state dir; then let the process end."""
    proc = subprocess.Popen(
        ctx.argv("up", "-v", *args),
        cwd=ctx.root,
        env=ctx.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    started = time.monotonic()
    lines: list[str] = []
    out: list[str] = []
    lock = threading.Lock()
    fired = threading.Event()
    fired_at: list[float] = []

    def fire() -> None:
        with lock:
            if not fired.is_set():
                fired.set()
                fired_at.append(time.monotonic() - started)
                action(proc)

    def read_err() -> None:
        for text in proc.stderr:  # type: ignore[union-attr]
            lines.append(text.rstrip("\n"))
            if line and line in text:
                fire()

    readers = [
        threading.Thread(target=read_err, daemon=True),
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for t in readers:
        t.start()
    state = ctx.root / "state"
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            if glob and not fired.is_set() and any(state.glob(glob)):
                fire()
            time.sleep(0.005)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for t in readers:
            t.join(10)
    assert time.monotonic() < deadline, f"`up` still running after {timeout:.0f} s"
    took = time.monotonic() - started
    return Watched(proc.returncode, "".join(out), lines, fired_at[0] if fired_at else None, took)


# -- the hosts -------------------------------------------------------------------------------------


def cmdlines(host) -> dict[int, bytes]:
    found = {}
    for pid in host.pids():
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
    return found


def ssh_sessions(host) -> list[int]:
    """The per-connection sshd processes of ``host`` (not its listening sshd, which anchors the host)."""
    return [pid for pid, cmd in cmdlines(host).items() if cmd.startswith(b"sshd") and pid != host.sshd_pid]


def settle(ctx: Ctx, timeout: float = 20.0) -> None:
    """Until no SSH session of a killed `up` is left on any host (what they ran has ended or detached)."""
    deadline = time.monotonic() + timeout
    while any(ssh_sessions(h) for h in ctx.lab.hosts):
        assert time.monotonic() < deadline, [(h.name, ssh_sessions(h)) for h in ctx.lab.hosts]
        time.sleep(0.1)
    time.sleep(0.5)


def wipe(ctx: Ctx) -> None:
    """A fresh start for a bootstrap: nothing of Foundation on the hosts, no state on this machine.
    (Faster than `down --purge`, which has its own test above; consul itself stays on the hosts' PATH.)"""
    for h in ctx.lab.hosts:
        h.crash()
        h.exec("rm -rf /etc/foundation /var/lib/foundation /opt/foundation /var/log/foundation /run/foundation")
    shutil.rmtree(ctx.root / "state", ignore_errors=True)


def loops(host) -> tuple[int, int]:
    """Supervising shell loops of (consul, agent) on ``host``."""
    cmds = cmdlines(host).values()
    return tuple(  # type: ignore[return-value]
        sum(1 for c in cmds if c.startswith(b"sh ") and f"foundation: {name} exited".encode() in c)
        for name in ("consul", "agent")
    )


def assert_converged(ctx: Ctx) -> None:
    """One consul, one agent, one loop and one pid file (naming that loop) of each per host; no upload
    left half-way; five alive members seen through the state file `up` wrote; that file right."""
    hosts = ctx.lab.hosts
    assert [processes(h) for h in hosts] == [(1, 1)] * 5, [processes(h) for h in hosts]
    assert [loops(h) for h in hosts] == [(1, 1)] * 5, [loops(h) for h in hosts]
    for h in hosts:
        run_dir = h.path("/run/foundation")
        assert sorted(os.listdir(run_dir)) == ["agent.pid", "consul.pid"], (h.name, os.listdir(run_dir))
        for name in ("consul", "agent"):
            pid = int((run_dir / f"{name}.pid").read_text())
            assert f"foundation: {name} exited".encode() in cmdlines(h).get(pid, b""), (h.name, name, pid)
        left = h.exec("find /etc/foundation /opt/foundation /var/lib/foundation -name '*.foundation-tmp'").stdout
        assert left == "", (h.name, left)
    members = ctx.run("consul", "members")
    assert members.returncode == 0, members.stderr
    rows = members.stdout.strip().splitlines()[1:]
    assert sorted((r.split()[1].split(":")[0], r.split()[2]) for r in rows) == sorted((h.ip, "alive") for h in hosts), (
        members.stdout
    )
    state = json.loads((ctx.root / "state" / "state.json").read_text())
    assert state["hosts"] == sorted(h.ip for h in hosts), state["hosts"]
    assert state["servers"] == [h.ip for h in hosts[:3]], state["servers"]
    assert state["token"] and state["consul_http_addrs"] and state["cacert"], sorted(state)
    assert len(set(state["nodes"].values())) == 5, state["nodes"]


# -- 3. the SSH connection to one host lost half-way -----------------------------------------------


FULL = os.environ.get("FOUNDATION_UP_FAULTS") == "all"  # every kill point (docs/reliability.md)


def cut_ssh(victim):
    """The action: ``victim`` refuses our key from now on and its SSH sessions are cut (SIGKILL)."""

    def cut(_proc) -> None:
        victim.path("/root/.ssh/authorized_keys").write_text("")  # a reconnect would fail authentication too
        procs = ssh_sessions(victim)
        assert procs, "no SSH session to cut"
        for pid in procs:
            os.kill(pid, signal.SIGKILL)

    return cut


@pytest.mark.parametrize("role", ("client", "server"))
def test_ssh_lost_to_one_host_mid_run_others_finish_exit_7_then_a_rerun_completes(ctx, role):
    wipe(ctx)
    # a client: the four others form the cluster without it; a server of a new cluster: the other two
    # wait for it (bootstrap_expect), so `up` stops at once, naming it, instead of waiting 90 s
    victim = ctx.lab.hosts[4 if role == "client" else 2]
    keys = victim.path("/root/.ssh/authorized_keys")
    saved = keys.read_text()
    try:
        w = watch_up(ctx, "--json", line=f"{victim.ip}: consul config", action=cut_ssh(victim))
        assert w.fired_at is not None, "\n".join(w.lines[-20:])
        stderr = "\n".join(w.lines)
        assert w.returncode == 7, stderr[-3000:]
        assert "Traceback" not in stderr
        settle(ctx)
        if role == "server":
            why = f"{victim.ip} failed before its Consul started ({victim.ip}: SSH connection lost"
            assert "the new cluster cannot elect a leader" in stderr and why in stderr, stderr[-2000:]
            assert w.took < 60, w.took  # not the 90 s ACL bootstrap wait
            error = why
            # it stopped early, yet says what it did on every host (--json: a normal run's document + the error)
            doc = json.loads(w.stdout)
            jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
            assert doc["error"]["exit_status"] == 7 and why in doc["error"]["message"], doc["error"]
            assert "bootstrap_expect" in doc["error"]["hint"] and "foundation up" in doc["error"]["hint"]
            hosts = {h["host"]: h for h in doc["hosts"]}
            assert sorted(hosts) == sorted(h.ip for h in ctx.lab.hosts), doc["hosts"]
            assert hosts[victim.ip]["state"] == "failed" and "SSH connection lost" in hosts[victim.ip]["error"]
            assert "consul" not in [s["step"] for s in hosts[victim.ip]["steps"]], hosts[victim.ip]
            for h in ctx.lab.hosts[:2]:  # the healthy servers: their Consul started, waiting for the lost one
                assert hosts[h.ip]["role"] == "server" and hosts[h.ip]["state"] == "changed", hosts[h.ip]
                assert "consul" in [s["step"] for s in hosts[h.ip]["steps"]], hosts[h.ip]
        else:
            assert f"1 of 5 hosts failed: {victim.ip}" in stderr, stderr[-2000:]
            doc = json.loads(w.stdout)
            jsonschema.validate(doc, json.loads(SCHEMA.read_text()))
            assert doc["error"]["message"].startswith(f"1 of 5 hosts failed: {victim.ip}"), doc["error"]
            hosts = doc["hosts"]
            assert [h["state"] != "failed" for h in hosts] == [True, True, True, True, False], hosts
            error = hosts[4]["error"]
            assert "SSH connection lost" in error, hosts[4]
            # what was done on it before the cut is reported, and the state file knows the host was touched
            assert [s["step"] for s in hosts[4]["steps"]][:2] == ["consul binary", "secrets"], hosts[4]["steps"]
            assert victim.ip in json.loads((ctx.root / "state" / "state.json").read_text())["hosts"]
            assert [processes(h) for h in ctx.lab.hosts[:4]] == [(1, 1)] * 4
            assert processes(victim)[1] == 0  # it never got as far as the agent
            members = ctx.run("consul", "members")
            assert members.returncode == 0 and members.stdout.count("alive") == 4, members.stdout + members.stderr

            refused = ctx.run("up", "--json")  # the key still refused: now it is authentication, at connect
            assert refused.returncode == 7, refused.stderr
            assert "SSH authentication failed" in json.loads(refused.stdout)["hosts"][4]["error"]
        assert all(c <= 1 and a <= 1 for c, a in (processes(h) for h in ctx.lab.hosts))
    finally:
        keys.write_text(saved)
    t0 = time.monotonic()
    again = ctx.run("up", "--json")
    assert again.returncode == 0, again.stderr
    assert_converged(ctx)
    print(  # figures for docs/reliability.md (pytest -rP shows them)
        f"ssh-cut {role}: cut at {w.fired_at:.1f} s, up exit {w.returncode} after {w.took:.1f} s "
        f"({error}); re-run with the key back: {time.monotonic() - t0:.1f} s"
    )


# -- 4. `up` killed in each phase ------------------------------------------------------------------


@dataclass(frozen=True)
class KillPoint:
    """Where to kill `up`: when stderr shows ``line`` (a progress line of `up -v`) or a file matching
    ``glob`` appears in the state dir (:func:`_landed` then checks the kill left that phase's state)."""

    line: str | None = None
    glob: str | None = None


def _landed(ctx: Ctx, phase: str, lines: list[str]) -> None:
    state = ctx.root / "state"
    text = "\n".join(lines)
    on_hosts = [h.path("/etc/foundation/consul.d/foundation.json").exists() for h in ctx.lab.hosts]
    kept = json.loads((state / "state.json").read_text()) if (state / "state.json").exists() else {}
    if phase in ("connect_and_probe", "plan"):
        # before apply: nothing written on any host, no gossip key kept yet
        assert not (state / "gossip.key").exists() and not any(on_hosts), (phase, on_hosts)
        made = (state / "tls" / "consul-agent-ca.pem").exists()
        assert made == (phase == "plan"), (phase, "CA made" if made else "no CA")
    elif phase == "apply":
        assert (state / "gossip.key").exists() and "token" not in kept, (phase, sorted(kept))
        assert "ACLs: bootstrap" not in text
    elif phase == "acl_bootstrap":
        assert "ACLs: bootstrap and node tokens" in text and "waiting for a leader" not in text
    else:  # wait_cluster, verify: the cluster formed, the state file holds the token but no address yet
        assert kept.get("token") and "consul_http_addr" not in kept, (phase, sorted(kept))
        assert ("checking every host's" in text) == (phase == "verify"), phase


KILL_POINTS = {
    "connect_and_probe": KillPoint(line=": probing"),
    "plan": KillPoint(glob="tls/server-*.pem"),  # secure_plan making the servers' certificates
    "apply": KillPoint(line=": consul service"),  # the first host starting Consul
    "acl_bootstrap": KillPoint(line="cluster: ACLs: bootstrap and node tokens"),
    "wait_cluster": KillPoint(line="cluster: waiting for a leader and every member"),
    "verify": KillPoint(line="cluster: checking every host's consul and node agent"),
}
CI_POINTS = ("acl_bootstrap", "verify")  # the ACL step runs beside the clients' apply
POINTS = tuple(KILL_POINTS) if FULL else CI_POINTS


@pytest.mark.parametrize("phase", POINTS)
def test_up_killed_in_a_phase_then_rerun_converges_without_duplicates(ctx, phase):
    wipe(ctx)
    point = KILL_POINTS[phase]
    w = watch_up(ctx, line=point.line, glob=point.glob, action=lambda proc: proc.send_signal(signal.SIGKILL))
    assert w.fired_at is not None and w.returncode == -signal.SIGKILL, (phase, w.returncode, w.lines[-10:])
    settle(ctx)
    counts = [processes(h) for h in ctx.lab.hosts]
    assert all(c <= 1 and a <= 1 for c, a in counts), (phase, counts)
    _landed(ctx, phase, w.lines)

    t0 = time.monotonic()
    proc = ctx.run("up", "--json")
    rerun = time.monotonic() - t0
    assert proc.returncode == 0, (phase, proc.stderr)
    assert "Traceback" not in proc.stderr
    if phase in ("wait_cluster", "verify"):  # every host had all it needs: the re-run restarts nothing
        assert [h["state"] for h in json.loads(proc.stdout)["hosts"]] == ["unchanged"] * 5, proc.stdout
    assert_converged(ctx)
    again = ctx.run("up", "--json")
    assert again.returncode == 0 and all(h["state"] == "unchanged" for h in json.loads(again.stdout)["hosts"])
    states = sorted({h["state"] for h in json.loads(proc.stdout)["hosts"]})
    print(f"up-kill {phase}: killed at {w.fired_at:.1f} s; re-run {rerun:.1f} s, exit 0, hosts {'/'.join(states)}")
