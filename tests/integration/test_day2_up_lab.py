"""Day-2 operations on the shape users get: a 4-host lab cluster made by a plain `foundation up`.

3 servers and 1 client, TLS and ACLs on (default deny), node labels in foundation.yaml. One lab
(one `up`) for the whole module, tests in order:

- labels: ``labels: {usb: zigbee}`` on one host is node meta in the catalog, and
  ``start-singleton --node-meta usb=zigbee`` runs on that node;
- the snapshot token: on the servers only (0600 root), on no file of the client, kept in the
  state file; the node agents' own tokens cannot take a snapshot;
- scheduled snapshots under the default ACLs: the leader's agent takes one with it, `snapshot
  save --from-scheduled` fetches it over SSH, and a round trip (value written, snapshot,
  changed, restore, back);
- `upgrade --agent` with a changed consul binary (same version, another sha256) and a config
  change: followers, the leader last, then the client; every node runs the new file with the
  new config and a restarted agent; raft healthy after; a singleton handed over, never twice at
  once. (The same on a systemd host: test_upgrade_systemd.py, marked slow.)
- last, a holder's host crashed: its peers' detector destroys the session (allowed by the agent
  policy, seen through the Serf port since the HTTP API is on loopback) and the singleton moves.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import ssl
import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_placement_support import overlaps, shared_dir, wait_for, witness_runs, write_witness
from tests.lab.cli import cluster_env, foundation, pinned_bundle
from tests.lab.netns import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(300)]

SNAPSHOT_TOKEN_FILE = "/etc/foundation/snapshot.token"


class Cluster:
    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.env = cluster_env(root)

    @property
    def servers(self):
        return self.lab.hosts[:3]

    @property
    def client(self):
        return self.lab.hosts[3]

    @property
    def labelled(self):
        return self.lab.hosts[1]

    def run(self, *args: str, check: bool = True, timeout: float = 240) -> subprocess.CompletedProcess:
        return foundation(args, env=self.env, cwd=self.root, timeout=timeout, check=check)

    def state(self) -> dict:
        return json.loads((self.root / "state" / "state.json").read_text())

    def http(self, path: str, host=None):
        """A server's API as the operator reaches it: HTTPS (the CA `up` made), the management token."""
        state = self.state()
        tls = ssl.create_default_context(cafile=state["cacert"])
        host = host or self.servers[0]
        req = urllib.request.Request(f"https://{host.ip}:8501{path}", headers={"X-Consul-Token": state["token"]})
        try:
            with urllib.request.urlopen(req, timeout=5, context=tls) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def leader(self) -> str:
        raft = self.http("/v1/operator/raft/configuration")
        return next(s["Node"] for s in raft["Servers"] if s["Leader"])

    def ps(self, name: str) -> list[dict]:
        return [r for r in json.loads(self.run("ps", "--json").stdout) if r["name"] == name]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    root = tmp_path_factory.mktemp("day2-up")
    pinned = pinned_bundle(root)  # the package under test may be edited while this runs
    lab = Lab(4)
    c = Cluster(lab, root)
    c.env["FOUNDATION_AGENT_BUNDLE"] = str(pinned)
    hosts = "".join(
        f"  - address: {h.ip}\n" + ("    labels: {usb: zigbee}\n" if h is c.labelled else "") for h in lab.hosts
    )
    (root / "foundation.yaml").write_text(
        f"hosts:\n{hosts}servers: 3\nssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
        f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
    )
    try:
        proc = c.run("up", "--json", check=False)
        assert proc.returncode == 0, proc.stderr
        roles = {h["address"]: h["role"] for h in json.loads(proc.stdout)["hosts"]}
        assert [roles[h.ip] for h in lab.hosts] == ["server"] * 3 + ["client"]
        yield c
    finally:
        lab.close()


@pytest.fixture
def witness_dir():
    d = shared_dir("foundation-day2-up-")
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_labels_are_node_meta_and_pin_a_singleton(cluster):
    for host in cluster.lab.hosts:
        meta = cluster.http(f"/v1/catalog/node/{host.name}")["Node"]["Meta"]
        assert meta.get("foundation_cluster") == cluster.state()["cluster_id"]
        assert (meta.get("usb") == "zigbee") == (host is cluster.labelled), (host.name, meta)
    cluster.run("start-singleton", "z2m", "--node-meta", "usb=zigbee", "--", "sleep", "600")
    try:
        rows = wait_for(lambda: [r for r in cluster.ps("z2m") if r["state"] == "running"], 30, "z2m running")
        assert [r["node"] for r in rows] == [cluster.labelled.name]
    finally:
        cluster.run("stop", "z2m")


def _files_holding(host, needle: bytes) -> list[str]:
    """Every file the host wrote (its overlay upper dirs and private /tmp, /run) that contains ``needle``."""
    found = []
    for base in (Path(host.dir) / "upper", Path(host.dir) / "tmp", Path(host.dir) / "run"):
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                path = Path(dirpath) / name
                try:
                    if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                        found.append(str(path))
                except OSError:
                    continue
    return found


def test_snapshot_token_lives_on_the_servers_only(cluster):
    state = cluster.state()
    token = state["snapshot_token"]
    assert token and token != state["token"]
    assert token not in {t for n in state["node_tokens"].values() for t in n.values()}
    for host in cluster.servers:
        path = host.path(SNAPSHOT_TOKEN_FILE)
        assert path.read_text().strip() == token
        st = path.stat()
        assert (st.st_mode & 0o777, st.st_uid) == (0o600, 0), host.name
    assert not cluster.client.path(SNAPSHOT_TOKEN_FILE).exists()
    assert _files_holding(cluster.client, token.encode()) == []  # nowhere on the client: config, logs, data
    assert _files_holding(cluster.client, state["token"].encode()) == []  # nor the management token
    # Its policy is what Consul 1.8 needs for GET /v1/snapshot, plus the snapshot index.
    policy = cluster.http("/v1/acl/policy/name/foundation-snapshot")
    assert 'acl = "write"' in policy["Rules"] and "foundation/snapshots/" in policy["Rules"]


@pytest.mark.timeout(240)
def test_scheduled_snapshot_round_trip_under_default_acls(cluster, tmp_path):
    cluster.run("kv", "put", "day2/value", "before")
    cluster.run("config", "set", "snapshot.interval", "10s", "--cluster-wide")
    try:
        entries = wait_for(
            lambda: json.loads(cluster.run("snapshot", "list", "--json").stdout), 90, "a scheduled snapshot"
        )
    finally:
        cluster.run("config", "set", "snapshot.interval", "0s", "--cluster-wide")
    entry = entries[-1]
    taken_by = next(h for h in cluster.servers if h.name == entry["node"])  # the leader's agent: a server
    assert taken_by.path(entry["path"]).stat().st_mode & 0o777 == 0o600
    # Fetched from that node over SSH (this machine is not a node), checked against the index's sha256.
    snap = tmp_path / "sched.snap"
    out = cluster.run("snapshot", "save", str(snap), "--from-scheduled", "--explain")
    assert f"from {entry['node']}" in out.stdout and "base64" in out.stderr
    assert hashlib.sha256(snap.read_bytes()).hexdigest() == entry["sha256"]
    assert snap.stat().st_mode & 0o777 == 0o600

    cluster.run("kv", "put", "day2/value", "after")
    assert cluster.run("kv", "get", "day2/value").stdout.strip() == "after"
    cluster.run("snapshot", "restore", str(snap), "--yes")
    assert wait_for(
        lambda: cluster.run("kv", "get", "day2/value", check=False).stdout.strip() == "before", 30, "value back"
    )
    # The cluster is whole after the restore: every agent passing again.
    wait_for(
        lambda: len(cluster.http("/v1/health/service/foundation-agent?passing=1") or []) == 4,
        60,
        "4 agents passing after the restore",
    )


def _consul_exe_sha(host) -> str:
    from foundation_cli.core.upgrade import CONSUL_EXE

    exe = host.exec(CONSUL_EXE).stdout.strip()
    return host.exec(f"sha256sum {exe}").stdout.split()[0]


@pytest.mark.timeout(420)
def test_upgrade_rolls_servers_leader_last_then_the_client(cluster, tmp_path, witness_dir):
    from tests.lab.consul import consul_path

    new = tmp_path / "consul-new"  # "a new version": the same 1.8.7 with bytes appended (another sha256)
    new.write_bytes(Path(consul_path() or "/usr/local/bin/consul").read_bytes() + b"\0foundation-upgrade-test")
    digest = hashlib.sha256(new.read_bytes()).hexdigest()
    # And a config change on every node, taken up by the restart (Consul merges node_meta across its files).
    for host in cluster.lab.hosts:
        host.write("/etc/foundation/consul.d/zz-upgrade-test.json", '{"node_meta": {"upgraded": "yes"}}\n', 0o640)
    from foundation_cli.core.upgrade import AGENT_PID

    agents_before = {h.name: h.exec(AGENT_PID).stdout.strip() for h in cluster.lab.hosts}
    script, log = write_witness(witness_dir)
    cluster.run("start-singleton", "wit", "--", "python3", str(script), str(log))
    wait_for(lambda: witness_runs(log), 30, "the witness to start")

    leader = cluster.leader()
    proc = cluster.run("upgrade", "--consul-binary", str(new), "--dry-run", "--json")
    dry = json.loads(proc.stderr)
    assert [s["role"] for s in dry["steps"]] == ["follower", "follower", "leader", "client"]
    assert dry["steps"][2]["node"] == leader and dry["steps"][3]["node"] == cluster.client.name
    assert all(_consul_exe_sha(h) != digest for h in cluster.lab.hosts)  # the dry run changed nothing

    out = cluster.run("upgrade", "--consul-binary", str(new), "--agent", "--json", timeout=400)
    steps = json.loads(out.stdout)["steps"]
    assert [s["node"] for s in steps] == [s["node"] for s in dry["steps"]], steps
    assert all(s["result"] == "done" for s in steps), steps
    assert [s["started"] for s in steps] == sorted(s["started"] for s in steps)
    for host in cluster.lab.hosts:
        assert _consul_exe_sha(host) == digest, host.name
        meta = cluster.http(f"/v1/catalog/node/{host.name}")["Node"]["Meta"]
        assert meta.get("upgraded") == "yes" and (meta.get("usb") == "zigbee") == (host is cluster.labelled)
        assert host.exec(AGENT_PID).stdout.strip() not in ("", agents_before[host.name])  # --agent: restarted
    wait_for(
        lambda: len(cluster.http("/v1/health/service/foundation-agent?passing=1") or []) == 4, 60, "4 agents passing"
    )
    health = cluster.http("/v1/operator/autopilot/health")
    assert health["Healthy"] and health["FailureTolerance"] == 1
    assert sorted(m["Status"] for m in cluster.http("/v1/agent/members")) == [1, 1, 1, 1]
    assert cluster.http("/v1/kv/foundation/drain/?recurse=1") is None  # every node undrained
    # The singleton was handed over before its node restarted: never two at once, and it runs.
    runs = witness_runs(log)
    assert overlaps(runs) == [] and len(runs) >= 2, runs
    wait_for(lambda: [r for r in cluster.ps("wit") if r["state"] == "running"], 30, "the singleton running")
    cluster.run("stop", "wit")


def test_a_crashed_holder_is_taken_over_by_its_peers_detector_under_default_acls(cluster, witness_dir):
    """Last (it kills a host): with ACLs on and the HTTP API on loopback, the peers still see the
    holder's node die (its Serf port stops answering) and may destroy its session (the agent policy
    allows it), so the singleton moves at once rather than when the servers get round to it."""
    script, log = write_witness(witness_dir)
    cluster.run("start-singleton", "wit2", "--", "python3", str(script), str(log))
    rows = wait_for(lambda: [r for r in cluster.ps("wit2") if r["state"] == "running"], 30, "wit2 running")
    holder = next(h for h in cluster.lab.hosts if h.name == rows[0]["node"])
    survivors = [h for h in cluster.lab.hosts if h is not holder]
    live_server = next(h for h in cluster.servers if h is not holder)
    holder.crash()  # every process on it: consul, the agent, the witness
    moved = wait_for(
        lambda: [r for r in witness_runs(log) if r.node != holder.name and r.node != rows[0]["node"]], 60, "a new copy"
    )
    logs = {h.name: h.path("/var/log/foundation/agent.log").read_text(errors="replace") for h in survivors}
    acted = [n for n, text in logs.items() if f"holder node {holder.name}" in text and "destroying its session" in text]
    assert acted, {n: t[-2000:] for n, t in logs.items()}
    assert not any("not allowed to destroy" in t for t in logs.values()), logs
    runs = witness_runs(log)
    assert overlaps(runs) == [] and moved, runs
    assert cluster.http("/v1/kv/foundation/locks/wit2", host=live_server)[0].get("Session")
