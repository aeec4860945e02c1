"""`up` / `down` on real foreign machines: Debian roots booted with systemd (tests/lab/nspawn.py).

One module-scoped lab, the tests in order (each builds on the one before):

    node1, node2   namespace hosts (the machine's Python 3.11); node1 is also the bastion
    deb11          Debian 11, x86-64, Python 3.9, logged in as `labpw` whose sudo asks for a password
                   (given through ssh.sudo_password_env, never a command line)
    arm            Debian 11, arm64 (qemu-user), Python 3.9, SSH on port 2222 and only from the
                   bastion (sshd refuses logins from the operator's address): hosts[].proxy_jump
    deb13          Debian 13, x86-64, Python 3.13, `labnopw` (NOPASSWD sudo), whose only authorized
                   key is an encrypted one the operator holds in ssh-agent

up brings all five to "every agent registered" with real systemd units and an arm64 consul on the
arm64 host → a singleton pinned to the two Debian machines moves when its holder crashes, and the
crashed machine comes back on reboot → a replicated service runs on all five and `logs` reaches
each (through the bastion, with sudo's password) → a host whose agent cannot run makes `up` exit 7 naming the
cause → `down --purge` leaves the machines without a trace of Foundation (the arm64 host, gone from
foundation.yaml by then, reached through its bastion with the settings the state file kept).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.cli import cluster_env, foundation
from tests.lab.netns import Lab
from tests.lab.nspawn import SUDO_PASSWORD, ForeignHost, add_known_hosts, nspawn_available

pytestmark = [pytest.mark.lab, pytest.mark.timeout(420)]

SUDO_ENV = "FOUNDATION_LAB_SUDO_PW"
PASSPHRASE = "lab-key-passphrase"
FOREIGN_TARGETS = (("3.9", "x86_64"), ("3.9", "aarch64"), ("3.13", "x86_64"))  # Debian 11, 11 arm64, 13
TICK = 'echo "tick from $(hostname)"; exec sleep 100000'
FOUNDATION_PATHS = (
    "/etc/foundation",
    "/opt/foundation",
    "/var/lib/foundation",
    "/var/log/foundation",
    "/etc/systemd/system/foundation-consul.service",
    "/etc/systemd/system/foundation-agent.service",
    "/etc/systemd/system/multi-user.target.wants/foundation-consul.service",
    "/etc/systemd/system/multi-user.target.wants/foundation-agent.service",
)


class Mixed:
    def __init__(self, lab: Lab, root: Path, foreign: dict[str, ForeignHost], agent_env: dict[str, str]) -> None:
        self.lab = lab
        self.root = root
        self.foreign = foreign
        self.env = cluster_env(root, COLUMNS="200", **agent_env)
        self.env[SUDO_ENV] = SUDO_PASSWORD
        self.timings: dict[str, float] = {}

    @property
    def bastion(self):
        return self.lab.hosts[0]

    def write_config(self, *, deb13_extra: str = "", arm: bool = True) -> None:
        n1, n2 = self.lab.hosts
        f = self.foreign
        arm_entry = f"  - {{address: {f['arm'].ip}, port: 2222, proxy_jump: root@{n1.ip}}}\n" if arm else ""
        (self.root / "foundation.yaml").write_text(
            "hosts:\n"
            f"  - {n1.ip}\n"
            f"  - {n2.ip}\n"
            f"  - {{address: {f['deb11'].ip}, user: labpw}}\n"
            f"  - {{address: {f['deb13'].ip}, user: labnopw{deb13_extra}}}\n"
            f"{arm_entry}"
            "ssh:\n"
            "  user: root\n"
            f"  identity_file: {self.lab.ssh_key}\n"
            f"  known_hosts: {self.lab.known_hosts}\n"
            "  connect_timeout: 10\n"
            f"  sudo_password_env: {SUDO_ENV}\n"
        )

    def run(self, *args: str, timeout: float = 400) -> subprocess.CompletedProcess:
        proc = foundation(args, env=self.env, cwd=self.root, input="", timeout=timeout)
        assert SUDO_PASSWORD not in proc.stdout + proc.stderr, "the sudo password was printed"
        assert PASSPHRASE not in proc.stdout + proc.stderr
        return proc

    def json(self, *args: str):
        proc = self.run(*args, "--json", timeout=60)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    def consul(self, *args: str) -> str:
        proc = self.run("consul", *args, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout


def _fail_or_skip(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, consul_bin):
    reason = nspawn_available()
    if reason:
        _fail_or_skip(reason)
    root = tmp_path_factory.mktemp("foreign")
    # An encrypted key, held by an ssh-agent this fixture starts (and stops, by its pid).
    enc = root / "id_encrypted"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-C", "lab-encrypted", "-f", str(enc)], check=True
    )
    sock = root / "agent.sock"
    ssh_agent = subprocess.Popen(
        ["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL
    )
    lab: Lab | None = None
    foreign: dict[str, ForeignHost] = {}
    try:
        askpass = root / "askpass"
        askpass.write_text(f"#!/bin/sh\necho '{PASSPHRASE}'\n")
        askpass.chmod(0o700)
        deadline = time.monotonic() + 10
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        agent_env = {"SSH_AUTH_SOCK": str(sock)}
        subprocess.run(
            ["ssh-add", str(enc)],
            env={
                **os.environ,
                **agent_env,
                "SSH_ASKPASS": str(askpass),
                "SSH_ASKPASS_REQUIRE": "force",
                "DISPLAY": ":0",
            },
            check=True,
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=30,
        )
        lab = Lab(2)
        foreign = {
            "deb11": ForeignHost(lab, 2, "bullseye-amd64", name="deb11"),
            "deb13": ForeignHost(
                lab, 3, "trixie-amd64", name="deb13", authorized_keys=(enc.with_suffix(".pub")).read_text()
            ),
            "arm": ForeignHost(
                lab, 4, "bullseye-arm64", name="arm", ssh_port=2222, sshd_extra=f"DenyUsers *@{lab.bridge_ip}\n"
            ),
        }
        m = Mixed(lab, root, foreign, agent_env)
        # Pin the agent bundles (this machine's and the hosts' Pythons): the package under test may be
        # edited while the module runs, and a second `up` must find nothing to change.
        from foundation_cli.core import agent_bundle

        pins = root / "bundles"
        pins.mkdir()
        for bundle in (agent_bundle.build(), *(agent_bundle.for_target(*t) for t in FOREIGN_TARGETS)):
            shutil.copy(bundle.path, pins / bundle.path.name)
        m.env["FOUNDATION_AGENT_BUNDLE"] = str(pins)
        started = time.monotonic()
        for h in foreign.values():
            h.start()
        m.timings["boot"] = time.monotonic() - started
        add_known_hosts(lab, list(foreign.values()))
        # Pin the singleton test to the two Debian machines: a node meta of their own (Consul merges
        # node_meta from every file of its config dir; `down --purge` removes the dir).
        for name in ("deb11", "deb13"):
            meta = foreign[name].path("/etc/foundation/consul.d/00-lab.json")
            meta.parent.mkdir(parents=True, exist_ok=True)
            meta.write_text('{"node_meta": {"lab_os": "debian"}}\n')
        yield m
    finally:
        for h in foreign.values():
            h.close()
        if lab is not None:
            lab.close()
        ssh_agent.send_signal(signal.SIGTERM)
        try:
            ssh_agent.wait(timeout=5)
        except subprocess.TimeoutExpired:
            ssh_agent.kill()


def _wait(what: str, fn, timeout: float, every: float = 1.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last = exc
        else:
            if last:
                return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what} (last: {last!r})")


def test_up_brings_the_mixed_cluster_to_every_agent_registered(mixed):
    f = mixed.foreign
    # The arm64 host is reachable only through the bastion: a direct login is refused.
    direct = subprocess.run(
        mixed.lab.ssh_argv(mixed.bastion, "true")[:-2] + ["-p", "2222", f"root@{f['arm'].ip}", "true"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert direct.returncode != 0
    mixed.write_config()
    started = time.monotonic()
    proc = mixed.run("up")
    mixed.timings["up"] = time.monotonic() - started
    print(f"timings: {mixed.timings}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    nodes = {line.split()[0]: line for line in mixed.consul("members").splitlines()[1:] if line.strip()}
    assert {"deb11", "deb13", "arm"} <= set(nodes), nodes
    assert all(" alive " in line for line in nodes.values()), nodes
    catalog = mixed.consul("catalog", "nodes", "-service", "foundation-agent")
    for name in ("deb11", "deb13", "arm", "node1", "node2"):
        assert name in catalog, catalog
    for name, h in f.items():
        units = h.exec("systemctl is-active foundation-consul foundation-agent", check=False).stdout.split()
        assert units == ["active", "active"], (name, units)
    # The arm64 host runs an arm64 consul, uploaded because none was there.
    head = f["arm"].path("/opt/foundation/bin/consul").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == 183  # EM_AARCH64
    assert f["arm"].exec("uname -m").stdout.strip() == "aarch64"
    # Debian 11's agent runs on its Python 3.9 with the zeroconf built for it.
    assert "3.9" in f["deb11"].exec("python3 --version").stdout
    assert f["deb11"].path("/opt/foundation/agent/lib/zeroconf-0.148.0.dist-info").is_dir()
    # A second `up` changes nothing.
    again = mixed.run("up")
    assert again.returncode == 0, again.stdout + again.stderr
    states = {ln.split()[0]: ln.split()[3] for ln in again.stdout.splitlines() if ln.startswith("198.18.")}
    assert set(states.values()) == {"unchanged"}, again.stdout


def _holder(mixed) -> str | None:
    rows = [r for r in mixed.json("ps", "lab-tick") if r.get("state") == "running" and r.get("session")]
    return rows[0]["node"] if len(rows) == 1 else None


def test_singleton_moves_between_debian_11_and_13_when_its_holder_crashes(mixed):
    proc = mixed.run("start-singleton", "lab-tick", "--node-meta", "lab_os=debian", "--", "sh", "-c", TICK)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = _wait("a holder", lambda: _holder(mixed), 60)
    assert first in ("deb11", "deb13")
    other = "deb13" if first == "deb11" else "deb11"
    assert "sleep 100000" in mixed.foreign[first].exec("ps -eo args", check=False).stdout
    crashed_at = time.monotonic()
    mixed.foreign[first].crash()
    _wait(f"the singleton to move to {other}", lambda: _holder(mixed) == other, 90)
    mixed.timings["failover"] = time.monotonic() - crashed_at
    assert "sleep 100000" in mixed.foreign[other].exec("ps -eo args", check=False).stdout
    # The crashed machine reboots: systemd starts consul and the agent again; the node is back.
    mixed.foreign[first].start()
    _wait(
        f"{first} back as a member with its agent",
        lambda: (
            " alive " in next((ln for ln in mixed.consul("members").splitlines() if ln.startswith(first + " ")), "")
            and first in mixed.consul("catalog", "nodes", "-service", "foundation-agent")
        ),
        120,
        every=2,
    )
    units = mixed.foreign[first].exec("systemctl is-active foundation-consul foundation-agent", check=False).stdout
    assert units.split() == ["active", "active"]
    assert _holder(mixed) == other  # it stays where it moved
    logs = mixed.run("logs", "lab-tick", "--node", other, timeout=60)  # over SSH, as the host's login user
    assert logs.returncode == 0 and f"tick from {other}" in logs.stdout, logs.stdout + logs.stderr
    assert mixed.run("stop", "lab-tick").returncode == 0


def test_replicated_runs_on_every_host_and_logs_reach_each_one(mixed):
    proc = mixed.run("start-replicated", "lab-rep", "--", "sh", "-c", TICK)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def running() -> set[str]:
        return {r["node"] for r in mixed.json("ps", "lab-rep") if r.get("state") == "running"}

    _wait("lab-rep on all five nodes", lambda: running() >= {"node1", "node2", "deb11", "deb13", "arm"}, 90, every=2)
    # logs over SSH: the arm64 host through the bastion, Debian 11 as the sudo-password user.
    for node in ("arm", "deb11"):
        logs = mixed.run("logs", "lab-rep", "--node", node, timeout=60)
        assert logs.returncode == 0 and f"tick from {node}" in logs.stdout, (node, logs.stdout + logs.stderr)
    assert mixed.run("stop", "lab-rep").returncode == 0


def test_a_broadcast_reaches_every_agent_the_foreign_ones_too(mixed):
    """A cluster-wide setting travels as a broadcast (a Consul user event on _control); every node's agent
    (Python 3.9 on Debian 11 amd64 and arm64, 3.13 on Debian 13, the lab's own) receives and applies it."""
    proc = mixed.run("config", "set", "agent.log_level", "debug", "--cluster-wide", timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr

    def applied():
        status = mixed.json("config", "get", "agent.log_level", "--status")
        states = {n["node"]: n["state"] for n in status["nodes"]}
        return (
            states
            if set(states) >= {"deb11", "deb13", "arm", "node1", "node2"} and set(states.values()) == {"applied"}
            else None
        )

    _wait("every agent to apply the broadcast setting", applied, 90)
    # And a user broadcast is delivered to a listener while those agents are members.
    listener = subprocess.Popen(
        [sys.executable, "-m", "foundation_cli", "listen", "lab-chan", "--count", "1", "--timeout", "60s"],
        cwd=mixed.root,
        env=mixed.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in listener.stderr.readline()  # its blocking query is in place
        sent = mixed.run("broadcast", "lab-chan", "hello foreign hosts", timeout=60)
        assert sent.returncode == 0, sent.stdout + sent.stderr
        out, err = listener.communicate(timeout=60)
    finally:
        if listener.poll() is None:
            listener.kill()
    assert listener.returncode == 0 and "hello foreign hosts" in out, out + err
    assert mixed.run("config", "unset", "agent.log_level", "--cluster-wide", timeout=60).returncode == 0


def test_a_host_whose_agent_cannot_run_fails_up_naming_the_cause(mixed):
    deb11 = mixed.foreign["deb11"]
    # Something on the host breaks the agent at start-up: a module on its path shadowing the standard
    # library's json (the bundle on the host is not re-checked file by file: `up` sees the same bundle).
    breaker = deb11.path("/opt/foundation/agent/lib/json.py")
    breaker.write_text("raise ImportError('lab: agent cannot start')\n")
    deb11.exec("systemctl restart foundation-agent", check=False)
    mixed.write_config()
    started = time.monotonic()
    proc = mixed.run("up")
    elapsed = time.monotonic() - started
    out = proc.stdout + proc.stderr
    assert proc.returncode == 7, out
    assert "deb11" in out or deb11.ip in out
    assert "lab: agent cannot start" in out, out
    assert elapsed < 120
    breaker.unlink()
    fixed = mixed.run("up")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr


def test_a_host_without_python_3_9_is_refused_before_anything_changes(mixed):
    deb13 = mixed.foreign["deb13"]
    watched = [deb13.path(p) for p in ("/etc/systemd/system/foundation-agent.service", bootstrap_config())]
    before = [p.stat().st_mtime_ns for p in watched]
    mixed.write_config(deb13_extra=", python: python3.7")  # not on the host
    proc = mixed.run("up", "--host", deb13.ip)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out
    assert "no python3.7 on the host" in out and "3.9+" in out and "nothing was changed" in out, out
    assert [p.stat().st_mtime_ns for p in watched] == before
    mixed.write_config()


def bootstrap_config() -> str:
    from foundation_cli.core import bootstrap

    return bootstrap.CONFIG_FILE


def test_down_purge_leaves_the_machines_clean(mixed):
    # The arm64 host is gone from foundation.yaml but the state file still knows it: `down` reaches it
    # the way `up` did, through the bastion (a direct login is refused), with what the state file kept.
    mixed.write_config(arm=False)
    proc = mixed.run("down", "--purge")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for name, h in mixed.foreign.items():
        left = [p for p in FOUNDATION_PATHS if os.path.lexists(h.path(p))]
        assert left == [], (name, left)
        files = h.exec("systemctl list-unit-files --no-legend 'foundation-*'", check=False).stdout
        assert files.strip() == "", (name, files)
        # Nothing loaded or running; systemd may still remember the name of a removed unit for a
        # moment ("not-found inactive dead") until it collects it.
        units = h.exec("systemctl list-units --all --plain --no-legend 'foundation-*'", check=False).stdout
        assert all(" not-found inactive dead " in ln for ln in units.splitlines() if ln.strip()), (name, units)
        procs = h.exec("ps -eo args", check=False).stdout
        assert "consul agent" not in procs and "foundation_cli" not in procs, (name, procs)
