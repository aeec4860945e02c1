"""`foundation upgrade` on a cluster with a systemd host (marked slow: deselected in CI, see conftest).

Run it with: ``sudo -E python3 -m pytest -m slow tests/integration/test_upgrade_systemd.py``.

3 servers made by a plain `foundation up` (ACLs and TLS on): two network-namespace hosts (Consul in
the supervised loop) and one Debian 11 root booted with systemd (tests/lab/nspawn.py), where `up`
installs the ``foundation-consul`` and ``foundation-agent`` units. `upgrade --consul-binary … --agent` with
the same consul 1.8.7 plus appended bytes (another sha256) restarts the systemd host through
``systemctl restart foundation-consul`` (and installs the agent bundle for its Python 3.9, then
``systemctl restart foundation-agent``): followers first, the leader last; afterwards every node
runs the new file (read from /proc/<MainPID>/exe on the systemd host), autopilot is healthy with
failure tolerance 1, nothing is left drained, and a singleton pinned to the systemd host and one
namespace host was handed over before its node restarted (a shared witness log: never two at once).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.test_placement_support import overlaps, shared_dir, wait_for, witness_runs, write_witness
from tests.lab.cli import cluster_env, foundation
from tests.lab.netns import Lab
from tests.lab.nspawn import ForeignHost, add_known_hosts, nspawn_available

pytestmark = [pytest.mark.lab, pytest.mark.slow, pytest.mark.timeout(600)]


class Mixed:
    def __init__(self, lab: Lab, deb: ForeignHost, root: Path) -> None:
        self.lab, self.deb, self.root = lab, deb, root
        self.env = cluster_env(root)

    def run(self, *args: str, timeout: float = 500) -> subprocess.CompletedProcess:
        return foundation(args, env=self.env, cwd=self.root, input="", timeout=timeout, check=True)

    def http(self, path: str):
        """A server's API as the operator reaches it: HTTPS with the CA and management token `up` made."""
        import ssl
        import urllib.request

        state = json.loads((self.root / "state" / "state.json").read_text())
        tls = ssl.create_default_context(cafile=state["cacert"])
        req = urllib.request.Request(
            f"https://{self.lab.hosts[0].ip}:8501{path}", headers={"X-Consul-Token": state["token"]}
        )
        with urllib.request.urlopen(req, timeout=5, context=tls) as resp:
            return json.loads(resp.read())

    def json(self, *args: str):
        return json.loads(self.run(*args, "--json", timeout=60).stdout)


@pytest.fixture(scope="module")
def witness():
    d = shared_dir("foundation-upgrade-systemd-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, consul_bin, witness):
    reason = nspawn_available()
    if reason:
        pytest.fail(reason) if os.environ.get("CI") else pytest.skip(reason)
    root = tmp_path_factory.mktemp("upgrade-systemd")
    from foundation_cli.core import agent_bundle

    pins = root / "bundles"  # this machine's and Debian 11's Python: pinned while the module runs
    pins.mkdir()
    for bundle in (agent_bundle.build(), agent_bundle.for_target("3.9", "x86_64")):
        shutil.copy(bundle.path, pins / bundle.path.name)
    lab = Lab(2)
    deb = ForeignHost(lab, 2, "bullseye-amd64", name="deb11", binds=(str(witness),))
    try:
        deb.start()
        add_known_hosts(lab, [deb])
        m = Mixed(lab, deb, root)
        m.env["FOUNDATION_AGENT_BUNDLE"] = str(pins)
        # The singleton may run on deb11 and node2 only (node meta of their own; Consul merges node_meta).
        lab.hosts[1].write("/etc/foundation/consul.d/00-lab.json", '{"node_meta": {"wit": "yes"}}\n')
        meta = deb.path("/etc/foundation/consul.d/00-lab.json")
        meta.parent.mkdir(parents=True, exist_ok=True)
        meta.write_text('{"node_meta": {"wit": "yes"}}\n')
        hosts = "".join(f"  - {ip}\n" for ip in (lab.hosts[0].ip, lab.hosts[1].ip, deb.ip))
        (root / "foundation.yaml").write_text(
            f"hosts:\n{hosts}servers: 3\nssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 10\n"
        )
        m.run("up")
        units = deb.exec("systemctl is-active foundation-consul foundation-agent", check=False).stdout.split()
        assert units == ["active", "active"], units
        yield m
    finally:
        deb.close()
        lab.close()


def _exe_sha(run_on, consul_exe: str) -> str:
    exe = run_on(consul_exe).strip()
    return run_on(f"sha256sum {exe}").split()[0]


def test_upgrade_restarts_the_systemd_host_through_its_unit(mixed, witness, consul_bin):
    from foundation_cli.core.upgrade import AGENT_PID, CONSUL_EXE, CONSUL_PID

    deb = mixed.deb
    on_deb = lambda cmd: deb.exec(cmd).stdout  # noqa: E731
    node_hosts = {h.name: h for h in mixed.lab.hosts}
    new = mixed.root / "consul-new"  # the same 1.8.7 with bytes appended: another sha256
    new.write_bytes(Path(consul_bin).read_bytes() + b"\0foundation-upgrade-test")
    digest = hashlib.sha256(new.read_bytes()).hexdigest()

    script, log = write_witness(witness)
    mixed.run("start-singleton", "wit", "--node-meta", "wit=yes", "--", "python3", str(script), str(log))
    wait_for(lambda: witness_runs(log), 60, "the witness to start")
    main_pid_before = on_deb(CONSUL_PID).strip()
    assert main_pid_before == on_deb("systemctl show -p MainPID --value foundation-consul").strip()
    agent_pid_before = on_deb(AGENT_PID).strip()
    # What --agent must install there: the bundle for Debian 11's Python 3.9, not this machine's.
    deb_bundle = next(Path(mixed.env["FOUNDATION_AGENT_BUNDLE"]).glob("agent-3.9-x86_64-*.tar.gz"))
    deb_bundle_sha = hashlib.sha256(deb_bundle.read_bytes()).hexdigest()

    dry = json.loads(mixed.run("upgrade", "--consul-binary", str(new), "--dry-run", "--json").stderr)
    assert [s["role"] for s in dry["steps"]] == ["follower", "follower", "leader"]
    out = mixed.run("upgrade", "--consul-binary", str(new), "--agent", "--json")
    steps = json.loads(out.stdout)["steps"]
    assert [s["node"] for s in steps] == [s["node"] for s in dry["steps"]], steps
    assert all(s["result"] == "done" for s in steps), steps
    print("upgrade steps:", [(s["node"], s["role"], s["seconds"]) for s in steps])

    # The systemd host: consul restarted by its unit (a new MainPID), running the new file, unit active.
    assert on_deb("systemctl is-active foundation-consul").strip() == "active"
    assert on_deb(CONSUL_PID).strip() not in ("", main_pid_before)
    assert _exe_sha(on_deb, CONSUL_EXE) == digest
    # --agent: the 3.9 bundle installed and the foundation-agent unit restarted (a new MainPID).
    assert on_deb("cat /opt/foundation/agent/.bundle-sha256").strip() == deb_bundle_sha
    assert on_deb("systemctl is-active foundation-agent").strip() == "active"
    assert on_deb(AGENT_PID).strip() not in ("", agent_pid_before)
    wait_for(lambda: len(mixed.http("/v1/health/service/foundation-agent?passing=1")) == 3, 60, "3 agents passing")
    for host in node_hosts.values():
        assert _exe_sha(lambda cmd, h=host: h.exec(cmd).stdout, CONSUL_EXE) == digest, host.name
    health = mixed.http("/v1/operator/autopilot/health")
    assert health["Healthy"] and health["FailureTolerance"] == 1, health
    members = [ln.split() for ln in mixed.run("consul", "members").stdout.splitlines()[1:] if ln.strip()]
    assert sorted(m[2] for m in members) == ["alive"] * 3, members
    raft = mixed.run("consul", "operator", "raft", "list-peers").stdout
    assert raft.count("leader") == 1 and raft.count("follower") == 2 and raft.count("true") == 3, raft
    drains = subprocess.run(
        [sys.executable, "-m", "foundation_cli", "consul", "kv", "get", "-recurse", "foundation/drain/"],
        cwd=mixed.root,
        env=mixed.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert drains.stdout.strip() == ""  # every node undrained
    runs = witness_runs(log)  # deb11 and node2 both restarted: the singleton moved at least once
    assert overlaps(runs) == [] and len(runs) >= 2, runs
    wait_for(lambda: [r for r in mixed.json("ps") if r["name"] == "wit" and r["state"] == "running"], 60, "wit running")
    mixed.run("stop", "wit")
