"""`foundation up` / `down` over SSH on lab hosts (network namespaces with their own sshd and mounts).

One 5-host lab is shared by the module; the tests run in order and build on each other:
dry run (touches nothing) → up on 3 (3 servers, agents) → re-run unchanged → 4th host joins as a
client → a partitioned 5th host fails alone (exit 7) → host keys → one-line errors → down.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.lab.cli import cluster_env, pinned_bundle
from tests.lab.netns import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(240)]


class Ctx:
    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.env = cluster_env(root)

    extra = ""  # settings every later write keeps (set once the cluster runs with them)

    def write(self, hosts, *, known_hosts: str | None = None, identity: str | None = None, extra: str = "") -> None:
        extra = extra or self.extra
        lines = "".join(f"  - {h.ip if hasattr(h, 'ip') else h}\n" for h in hosts)
        (self.root / "foundation.yaml").write_text(
            f"hosts:\n{lines}ssh:\n  user: root\n  identity_file: {identity or self.lab.ssh_key}\n"
            f"  known_hosts: {known_hosts or self.lab.known_hosts}\n  connect_timeout: 3\n{extra}"
        )

    def run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "foundation_cli", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=200,
        )

    def state(self) -> dict:
        return json.loads((self.root / "state" / "state.json").read_text())

    def http(self, host, path: str):
        """A server's API as the operator reaches it: HTTPS (the CA `up` made) with the management token."""
        import ssl

        state = self.state()
        tls = ssl.create_default_context(cafile=state["cacert"])
        req = urllib.request.Request(f"https://{host.ip}:8501{path}", headers={"X-Consul-Token": state["token"]})
        with urllib.request.urlopen(req, timeout=5, context=tls) as resp:
            return json.loads(resp.read())


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    root = tmp_path_factory.mktemp("up-ssh")
    pinned = pinned_bundle(root)  # for the module: the package under test may be edited while it runs
    lab = Lab(5)
    c = Ctx(lab, root)
    c.env["FOUNDATION_AGENT_BUNDLE"] = str(pinned)
    try:
        yield c
    finally:
        lab.close()  # kills every process in the hosts, whatever the tests left


def _upper_snapshot(lab: Lab, hosts, dirs=("",)) -> dict[str, tuple[int, int]]:
    """Every file each host wrote (its overlay upper dirs): size and mtime."""
    snap = {}
    for h in hosts:
        for sub in dirs:
            snap.update(_walk(Path(h.dir) / "upper" / sub))
    return snap


def _walk(base: Path) -> dict[str, tuple[int, int]]:
    snap = {}
    for dirpath, _dirs, files in os.walk(base):
        for name in files:
            st = (Path(dirpath) / name).lstat()
            snap[os.path.join(dirpath, name)] = (st.st_size, st.st_mtime_ns)
    return snap


def test_dry_run_prints_everything_and_touches_nothing(ctx):
    hosts = ctx.lab.hosts[:3]
    ctx.write(hosts)
    before = _upper_snapshot(ctx.lab, hosts)
    proc = ctx.run("up", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    script = proc.stdout
    for h in hosts:
        assert f"root@{h.ip}" in script
    assert "/etc/foundation/consul.d/foundation.json" in script and '"bootstrap_expect": 3' in script
    assert "nohup setsid sh -c" in script  # the service start, shown
    # The gossip key is never printed (masked, or a ${VARIABLE} the script asks for).
    assert re.search(r'"encrypt": "(\*\*\*\*|\$\{FOUNDATION_SECRET_\d+\})"', script)
    assert "consul tls ca create" in script and "/v1/acl/bootstrap" in script  # secure defaults, shown
    assert _upper_snapshot(ctx.lab, hosts) == before
    assert not (ctx.root / "state" / "state.json").exists()


def test_up_forms_three_server_cluster_with_agents(ctx):
    proc = ctx.run("up", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [h["role"] for h in result["hosts"]] == ["server"] * 3
    members = ctx.http(ctx.lab.hosts[0], "/v1/agent/members")
    assert sorted((m["Name"], m["Status"], m["Tags"]["role"]) for m in members) == [
        (h.name, 1, "consul") for h in ctx.lab.hosts[:3]
    ]
    assert len(ctx.http(ctx.lab.hosts[0], "/v1/status/peers")) == 3
    state = json.loads((ctx.root / "state" / "state.json").read_text())
    assert oct((ctx.root / "state" / "state.json").stat().st_mode & 0o777) == "0o600"
    # The cluster record and the agents (they register themselves as a Consul service).
    kv = ctx.run("consul", "kv", "get", "foundation/cluster")
    assert json.loads(kv.stdout)["cluster_id"] == state["cluster_id"]
    agents = ctx.http(ctx.lab.hosts[0], "/v1/catalog/service/foundation-agent")
    assert sorted(a["Node"] for a in agents) == [h.name for h in ctx.lab.hosts[:3]]


def test_second_run_is_unchanged(ctx):
    proc = ctx.run("up", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [h["state"] for h in json.loads(proc.stdout)["hosts"]] == ["unchanged"] * 3


def test_plain_up_repairs_a_host_whose_consul_and_agent_died(ctx):
    host = ctx.lab.hosts[1]
    host.crash()  # consul, the agent and their supervising loops die; sshd stays
    # The pid files now name another live process (the kernel reuses pids): that is not "running".
    for name in ("consul", "agent"):
        host.write(f"/run/foundation/{name}.pid", f"{host.sshd_pid}\n")
    proc = ctx.run("up", "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert [h["state"] for h in hosts] == ["unchanged", "changed", "unchanged"], hosts
    steps = {s["step"]: s["state"] for s in hosts[1]["steps"]}
    assert steps["consul"] == "started" and steps["agent"] == "started", steps
    # Exactly one consul and one agent on it again (the stale loops were not doubled).
    cmdlines = host.cmdlines()
    assert len([c for c in cmdlines if c.startswith(b"/") and b"consul agent" in c]) == 1, cmdlines
    assert len([c for c in cmdlines if b"-m foundation_cli.agent" in c and not c.startswith(b"sh ")]) == 1, cmdlines
    assert host.sshd_pid in host.pids()  # the stale pid files named sshd: it must not have been killed
    again = ctx.run("up", "--json")
    assert [h["state"] for h in json.loads(again.stdout)["hosts"]] == ["unchanged"] * 3, again.stdout


def test_changed_config_dry_run_shows_the_diff_and_restarts_only_consul(ctx):
    ctx.write(ctx.lab.hosts[:3], extra="consul:\n  log_level: DEBUG\n")
    installed = ("etc", "opt", "usr/local")  # a running cluster writes its own data under /var: not ours
    before = _upper_snapshot(ctx.lab, ctx.lab.hosts[:3], installed)
    proc = ctx.run("up", "--dry-run")
    ctx.write(ctx.lab.hosts[:3])
    assert proc.returncode == 0, proc.stderr
    assert '-  "log_level": "INFO",' in proc.stderr and '+  "log_level": "DEBUG",' in proc.stderr
    assert proc.stdout.count("/run/foundation/consul.pid; while :") == 3  # consul restarted on each
    assert "/run/foundation/agent.pid; while :" not in proc.stdout  # the agent is left alone
    assert _upper_snapshot(ctx.lab, ctx.lab.hosts[:3], installed) == before


def test_changed_config_restarts_consul_one_server_at_a_time(ctx):
    ctx.extra = "consul:\n  log_level: DEBUG\n"
    ctx.write(ctx.lab.hosts[:3])
    proc = ctx.run("up", "--json", "-v")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("rolling restart") == 3
    for host in json.loads(proc.stdout)["hosts"]:
        steps = {st["step"]: st["state"] for st in host["steps"]}
        assert steps["consul config"] == "written" and steps["consul"] == "restarted"
        assert steps["agent install"] == "unchanged" and steps["agent"] == "unchanged"
    assert '"log_level": "DEBUG"' in ctx.lab.hosts[2].path("/etc/foundation/consul.d/foundation.json").read_text()
    members = ctx.http(ctx.lab.hosts[0], "/v1/agent/members")
    assert sorted(m["Status"] for m in members) == [1, 1, 1]
    assert ctx.http(ctx.lab.hosts[1], "/v1/status/leader")


def test_ssh_and_consul_passthrough_use_the_cluster_settings(ctx):
    first = ctx.lab.hosts[0]
    proc = ctx.run("ssh", first.name, "hostname")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == first.name
    members = ctx.run("consul", "members")
    assert members.returncode == 0 and members.stdout.count("alive") == 3
    proc = ctx.run("ssh", "no-such-node")
    assert proc.returncode == 5 and "no node 'no-such-node'" in proc.stderr


def test_fourth_host_joins_as_client(ctx):
    # This host has no consul: ours is uploaded (sha256 checked) to /opt/foundation/bin.
    ctx.lab.hosts[3].exec("rm -f /usr/local/bin/consul")
    ctx.write(ctx.lab.hosts[:4])
    proc = ctx.run("up", "--json")
    assert proc.returncode == 0, proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert [h["state"] for h in hosts] == ["unchanged"] * 3 + ["changed"]
    assert hosts[3]["role"] == "client"
    steps = {st["step"]: st["state"] for st in hosts[3]["steps"]}
    assert steps["consul binary"] == "uploaded"
    assert ctx.lab.hosts[3].path("/opt/foundation/bin/consul").stat().st_size > 1 << 20
    members = ctx.http(ctx.lab.hosts[0], "/v1/agent/members")
    assert sorted((m["Name"], m["Status"]) for m in members)[-1] == (ctx.lab.hosts[3].name, 1)
    # Its auto_encrypt certificate comes from Consul's Connect CA, which the CLI does not trust: a
    # client serves no API on its LAN address at all (plain HTTP on loopback, for its node agent).
    import socket

    for port in (8500, 8501):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((ctx.lab.hosts[3].ip, port), timeout=3).close()
    agents = ctx.http(ctx.lab.hosts[0], "/v1/catalog/service/foundation-agent")
    assert ctx.lab.hosts[3].name in {a["Node"] for a in agents}  # its agent reached Consul over loopback
    assert all(a.startswith("https://") for a in ctx.state()["consul_http_addrs"])  # the CLI: servers only
    assert ctx.lab.hosts[3].ip not in " ".join(ctx.state()["consul_http_addrs"])


def test_a_host_that_is_down_does_not_stop_the_others(ctx):
    dead = ctx.lab.hosts[4]
    dead.partition()
    try:
        ctx.write(ctx.lab.hosts)
        proc = ctx.run("up", "--json")
    finally:
        dead.heal()
    assert proc.returncode == 7, proc.stderr
    hosts = json.loads(proc.stdout)["hosts"]
    assert [h["state"] for h in hosts[:4]] == ["unchanged"] * 4
    assert hosts[4]["state"] == "failed", hosts[4]
    assert "cannot connect" in hosts[4]["error"] or "SSH failed" in hosts[4]["error"], hosts[4]
    assert "1 of 5 hosts failed" in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_host_key_refused_then_accepted(ctx, tmp_path):
    first = ctx.lab.hosts[0]
    pinned = Path(ctx.lab.known_hosts).read_text().splitlines()
    known = tmp_path / "known_hosts"
    known.write_text("".join(line + "\n" for line in pinned if not line.startswith(first.ip + " ")))
    ctx.write(ctx.lab.hosts[:4], known_hosts=str(known))
    proc = ctx.run("up", "--host", first.ip)
    assert proc.returncode == 4, proc.stderr
    assert f"{first.ip}: unknown host key" in proc.stdout + proc.stderr
    proc = ctx.run("up", "--host", first.ip, "--accept-new-host-keys", "--json")
    assert proc.returncode == 0, proc.stderr
    assert [h["state"] for h in json.loads(proc.stdout)["hosts"]] == ["unchanged"]
    # The partitioned 5th host of the last file never had anything done on it: it never joined the
    # cluster's record, so dropping it from the file removes nothing.
    assert json.loads(proc.stdout)["removed"] == []
    assert first.ip in known.read_text()
    # A changed key is never accepted, even with --accept-new-host-keys.
    other = next(line for line in pinned if line.startswith(ctx.lab.hosts[1].ip + " ")).split()[1:]
    known.write_text(
        "".join(line + "\n" for line in pinned if not line.startswith(first.ip + " "))
        + f"{first.ip} {' '.join(other)}\n"
    )
    proc = ctx.run("up", "--host", first.ip, "--accept-new-host-keys", "--json")
    assert proc.returncode == 4
    assert "host key has CHANGED" in json.loads(proc.stdout)["hosts"][0]["error"]


@pytest.mark.parametrize(
    "case",
    ["bad key file", "unreachable", "invalid yaml", "unknown key", "wrong type"],
)
def test_one_line_errors(ctx, tmp_path, case):
    env = {"FOUNDATION_STATE_DIR": str(tmp_path / "state")}
    hosts = ctx.lab.hosts[:1]
    if case == "bad key file":
        ctx.write(hosts, identity="/etc/hostname")
        expect, code = "/etc/hostname: bad key file", 2
    elif case == "unreachable":
        ctx.write(["198.18.0.254"])
        expect, code = "198.18.0.254:22", 3
    elif case == "invalid yaml":
        (ctx.root / "foundation.yaml").write_text("hosts: [a, b\n")
        expect, code = "foundation.yaml:2:1: invalid YAML", 2
    elif case == "unknown key":
        (ctx.root / "foundation.yaml").write_text("hosts: [a]\nservres: 1\n")
        expect, code = "foundation.yaml:2:1: unknown key 'servres'", 2
    else:
        (ctx.root / "foundation.yaml").write_text("hosts: [a]\nservers: three\n")
        expect, code = "foundation.yaml:2:10: servers must be a whole number", 2
    proc = ctx.run("up", env=env)
    assert proc.returncode == code, proc.stderr
    first = (
        proc.stderr.strip().splitlines()[0] if case in ("invalid yaml", "unknown key", "wrong type") else proc.stderr
    )
    assert expect in first
    assert "Traceback" not in proc.stderr


def test_down_leaves_nothing_running(ctx):
    ctx.write(ctx.lab.hosts)
    proc = ctx.run("down")
    # Host 5 never got anything; every host answers, so down succeeds everywhere.
    assert proc.returncode == 0, proc.stderr
    for h in ctx.lab.hosts:
        left = h.cmdlines()
        assert all(b"sshd" in c for c in left), (h.name, left)
    # Data kept without --purge, and with it the ACLs: the state keeps only the tokens and the CA.
    kept = ctx.state()
    assert "consul_http_addr" not in kept and kept["token"] and kept["down"] is True
    assert ctx.lab.hosts[0].path("/var/lib/foundation/consul").exists()
