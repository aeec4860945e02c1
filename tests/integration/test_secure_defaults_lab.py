"""Secure by default, on a cluster made by a plain `foundation up` (3 lab hosts) and by `up --local`.

One 4-host lab for the module: hosts 1-3 are the cluster, host 4 is a machine on the same LAN
that is not a member. Checked with real Consul:

- an anonymous client — on the operator's machine, on a member host, on the non-member — gets
  "connection refused" on plain HTTP at a LAN address and 403 over HTTPS (with or without the CA)
  for KV writes, service registration and reading tokens; on a member's loopback (plain HTTP) too;
- the node agent's own token cannot write ``foundation/services/`` (it can write its locks);
- the operator's CLI works with nothing but the state file (kv put/get, start-singleton, ps);
- files on hosts and on the operator's machine have private modes;
- a secrets scan: the main commands with --explain, --dry-run, --json, -vv and error paths,
  plus every log on the hosts, contain no token, gossip key or private key material.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.lab.cli import cluster_env, pinned_bundle
from tests.lab.netns import Lab

pytestmark = [pytest.mark.lab, pytest.mark.timeout(420)]

ANON_PUT_KV = "-X PUT --data evil {base}/v1/kv/foundation/services/evil"
ANON_REGISTER = '-X PUT --data \'{{"Name": "evil"}}\' {base}/v1/agent/service/register'
ANON_TOKENS = "{base}/v1/acl/tokens"


class Cluster:
    def __init__(self, lab: Lab, root: Path) -> None:
        self.lab = lab
        self.root = root
        self.env = cluster_env(root)
        self.outputs: list[str] = []  # everything the CLI printed (for the secrets scan)

    @property
    def members(self):
        return self.lab.hosts[:3]

    @property
    def stranger(self):
        return self.lab.hosts[3]

    def run(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [sys.executable, "-m", "foundation_cli", *args],
            cwd=self.root,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=240,
        )
        self.outputs.append(f"$ foundation {' '.join(args)}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def state(self) -> dict:
        return json.loads((self.root / "state" / "state.json").read_text())


def _curl_code(run, args: str) -> str:
    """HTTP status (or 'refused'/'error N') of a curl made by ``run(cmd)``."""
    proc = run(f"curl -s -o /dev/null -m 5 -w '%{{http_code}}' {args}")
    if proc.returncode == 7:
        return "refused"
    if proc.returncode != 0:
        return f"error {proc.returncode}"
    return proc.stdout.strip()


def _local_run(cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, timeout=30)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if not shutil.which("curl"):
        pytest.skip("needs curl")
    root = tmp_path_factory.mktemp("secure")
    pinned = pinned_bundle(root)
    lab = Lab(4)
    c = Cluster(lab, root)
    c.env["FOUNDATION_AGENT_BUNDLE"] = str(pinned)
    hosts = "".join(f"  - {h.ip}\n" for h in c.members)
    (root / "foundation.yaml").write_text(
        f"hosts:\n{hosts}ssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
        f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 3\n"
    )
    try:
        proc = c.run("up", "--json")
        assert proc.returncode == 0, proc.stderr
        yield c
    finally:
        lab.close()


def test_state_holds_the_management_token_privately(cluster):
    state = cluster.state()
    assert state["token"] and state["cacert"] and set(state["node_tokens"]) == {h.name for h in cluster.members}
    state_dir = cluster.root / "state"
    for path in [state_dir / "state.json", state_dir / "gossip.key", *sorted((state_dir / "tls").iterdir())]:
        assert path.stat().st_mode & 0o077 == 0, path
    assert state["consul_http_addr"].startswith("https://")


@pytest.mark.parametrize("where", ["operator", "member", "stranger"])
def test_anonymous_clients_get_nothing(cluster, where):
    run = {
        "operator": _local_run,
        "member": lambda cmd: cluster.members[1].exec(cmd, check=False),
        "stranger": lambda cmd: cluster.stranger.exec(cmd, check=False),
    }[where]
    cacert = cluster.state()["cacert"]
    if where != "operator":  # give the other machines the CA too: verification is not what stops them
        for h in (cluster.members[1], cluster.stranger):
            h.write("/root/ca.pem", Path(cacert).read_text())
        cacert = "/root/ca.pem"
    for server in cluster.members:
        plain = f"http://{server.ip}:8500"
        for tmpl in (ANON_PUT_KV, ANON_REGISTER, ANON_TOKENS):
            assert _curl_code(run, tmpl.format(base=plain)) == "refused", (where, server.name, tmpl)
        for tls_args in (f"--cacert {cacert}", "-k"):
            base = f"{tls_args} https://{server.ip}:8501"
            for tmpl in (ANON_PUT_KV, ANON_REGISTER, ANON_TOKENS):
                assert _curl_code(run, tmpl.format(base=base)) == "403", (where, server.name, tmpl, tls_args)


def test_anonymous_on_a_members_loopback_gets_403(cluster):
    host = cluster.members[0]
    run = lambda cmd: host.exec(cmd, check=False)  # noqa: E731
    for tmpl in (ANON_PUT_KV, ANON_REGISTER, ANON_TOKENS):
        assert _curl_code(run, tmpl.format(base="http://127.0.0.1:8500")) == "403", tmpl


def test_the_agent_token_cannot_write_service_specs(cluster):
    host = cluster.members[0]
    token_file = host.path("/etc/foundation/agent.token")
    assert token_file.stat().st_mode & 0o777 == 0o600
    assert host.path("/etc/foundation/tls/server-key.pem").stat().st_mode & 0o777 == 0o600
    assert host.path("/etc/foundation/consul.d/foundation.json").stat().st_mode & 0o027 == 0
    token = token_file.read_text().strip()
    header = f"-H 'X-Consul-Token: {token}'"
    run = lambda cmd: host.exec(cmd, check=False)  # noqa: E731
    base = "http://127.0.0.1:8500"
    assert _curl_code(run, f"{header} -X PUT --data x {base}/v1/kv/foundation/services/evil") == "403"
    assert _curl_code(run, f"{header} -X PUT --data x {base}/v1/kv/foundation/config/evil") == "403"
    assert _curl_code(run, f"{header} {base}/v1/acl/tokens") == "403"
    assert _curl_code(run, f"{header} -X PUT --data x {base}/v1/kv/foundation/locks/probe") == "200"
    assert _curl_code(run, f"{header} -X DELETE {base}/v1/kv/foundation/locks/probe") == "200"


def test_the_operator_cli_works_from_the_state_file(cluster):
    assert cluster.run("kv", "put", "secure/k", "v1").returncode == 0
    got = cluster.run("kv", "get", "secure/k")
    assert got.returncode == 0 and got.stdout.strip() == "v1", got.stderr
    start = cluster.run("start-singleton", "secure-clock", "--", "sh", "-c", "while true; do sleep 5; done")
    assert start.returncode == 0, start.stderr
    ps = cluster.run("ps", "--json")
    assert ps.returncode == 0, ps.stderr
    assert "secure-clock" in ps.stdout
    assert cluster.run("consul", "members").returncode == 0
    explained = cluster.run("kv", "get", "secure/k", "--explain")
    assert f"--cacert {cluster.state()['cacert']}" in explained.stdout + explained.stderr


def _secrets(cluster) -> dict[str, str]:
    state = cluster.state()
    found = {"management token": state["token"], "gossip key": (cluster.root / "state" / "gossip.key").read_text()}
    found["snapshot token"] = state["snapshot_token"]  # on the servers only, for scheduled snapshots
    for node, tokens in state["node_tokens"].items():
        found[f"{node} consul token"] = tokens["consul"]
        found[f"{node} agent token"] = tokens["agent"]
    for key in sorted((cluster.root / "state" / "tls").glob("*-key.pem")):
        body = "".join(line for line in key.read_text().splitlines() if "-----" not in line)
        found[key.name] = body[10:40]  # a stretch of the key material itself
    return {k: v.strip() for k, v in found.items()}


def test_secrets_scan_finds_nothing(cluster):
    c = cluster
    spec = ["--", "sh", "-c", "sleep 100"]
    commands = [
        ("up", "--explain"),
        ("up", "--dry-run"),
        ("up", "--json", "-vv"),
        ("status", "--json"),
        ("status", "-vv"),
        ("kv", "put", "scan/k", "v", "--explain"),
        ("kv", "put", "scan/k", "v", "--dry-run"),
        ("kv", "get", "scan/k", "--json", "-vv"),
        ("start-singleton", "scan-one", "--explain", *spec),
        ("start-replicated", "scan-all", "--dry-run", *spec),
        ("ps", "--json", "-vv"),
        ("broadcast", "scan", "hello", "--explain"),
        ("config", "list", "--json", "-vv"),
        ("config", "get", "no.such.key", "-vv"),
        ("consul", "members"),
        ("exec", "--all", "--explain", "--", "true"),
        ("stop", "scan-one", "--explain"),
        # error paths
        ("kv", "get", "scan/missing", "-vv"),
        ("kv", "put", "scan/k", "v", "--token", "00000000-0000-0000-0000-000000000000", "-vv"),
        ("kv", "get", "scan/k", "--consul-addr", f"https://{c.stranger.ip}:8501", "-vv"),
        ("up", "--host", c.stranger.ip, "-vv"),
    ]
    for args in commands:
        c.run(*args)
    texts = list(c.outputs)
    for h in c.members:
        for log in ("agent.log", "consul.log"):
            path = h.path(f"/var/log/foundation/{log}")
            if path.exists():
                texts.append(f"== {h.name}:{log}\n" + path.read_text(errors="replace"))
    haystack = "\n".join(texts)
    if os.environ.get("FOUNDATION_SCAN_DUMP"):
        Path(os.environ["FOUNDATION_SCAN_DUMP"]).write_text(haystack)
    # The scan saw real work: raw operations shown, the agents' logs read, the secrets known.
    assert "X-Consul-Token: $CONSUL_HTTP_TOKEN" in haystack and "/v1/acl/token/self" in haystack
    assert "agent.log" in haystack and all(_secrets(c).values())
    leaks = [name for name, value in _secrets(c).items() if value and value in haystack]
    pem = re.findall(r"-----BEGIN [A-Z ]*PRIVATE KEY-----\n[A-Za-z0-9+/]", haystack)
    assert not leaks and not pem, f"leaked: {leaks} {pem[:1]}"


def test_down_then_up_brings_the_same_cluster_back_with_its_acls(cluster):
    """A full `down` keeps the servers' data (and ACLs): the state keeps the tokens, `up` reuses them."""
    assert cluster.run("kv", "put", "survives/down", "yes").returncode == 0
    token = cluster.state()["token"]
    down = cluster.run("down")
    assert down.returncode == 0, down.stderr
    kept = cluster.state()
    assert kept["token"] == token and "consul_http_addr" not in kept
    assert kept.get("cacert") and kept.get("node_tokens")
    up = cluster.run("up")
    assert up.returncode == 0, up.stderr
    assert cluster.state()["token"] == token
    got = cluster.run("kv", "get", "survives/down")
    assert got.stdout.strip() == "yes", got.stderr


def test_local_cluster_is_closed_to_anonymous_clients(tmp_path):
    """`up --local` (plain HTTP on 127.0.0.1, ACLs on): anonymous writes and token reads are refused."""
    from tests.integration.test_local_cluster import LocalEnv

    local = LocalEnv(tmp_path)
    try:
        up = local.run("up", "--local", "--http-port", str(local.port))
        assert up.returncode == 0, up.stderr
        base = local.addr
        for tmpl in (ANON_PUT_KV, ANON_REGISTER, ANON_TOKENS):
            assert _curl_code(_local_run, tmpl.format(base=base)) == "403", tmpl
        agent_token = (local.data / "agent.token").read_text().strip()
        assert (local.data / "agent.token").stat().st_mode & 0o777 == 0o600
        spec = f"-H 'X-Consul-Token: {agent_token}' -X PUT --data x {base}/v1/kv/foundation/services/evil"
        assert _curl_code(_local_run, spec) == "403"
        assert local.run("kv", "put", "k", "v").returncode == 0
        got = local.run("kv", "get", "k")
        assert got.stdout.strip() == "v", got.stderr
    finally:
        local.cleanup()


def test_user_option_runs_the_service_as_that_user(tmp_path):
    """--user: the agent drops privileges for the child (uid, gid, groups) and hands it no ACL token."""
    import pwd

    from tests.integration.test_local_cluster import LocalEnv

    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user 'nobody' here")
    local = LocalEnv(tmp_path)
    try:
        assert local.run("up", "--local", "--http-port", str(local.port)).returncode == 0
        token_file = local.data / "agent.token"
        script = f"id -u; id -G; env | grep -c CONSUL_HTTP_TOKEN; cat {token_file} || echo unreadable; sleep 100"
        start = local.run("start-replicated", "as-nobody", "--user", "nobody", "--", "sh", "-c", script)
        assert start.returncode == 0, start.stderr
        log = next(local.data.glob("nodes/*/services/as-nobody/output.log"))
        for _ in range(50):
            if "unreadable" in log.read_text():
                break
            import time

            time.sleep(0.1)
        lines = log.read_text().split()
        nobody = pwd.getpwnam("nobody")
        assert lines[:3] == [str(nobody.pw_uid), str(nobody.pw_gid), "0"], lines
        assert "unreadable" in lines
        bad = local.run("start-replicated", "no-such-user", "--user", "no-such-user-x", "--", "sleep", "100")
        assert bad.returncode != 0 and "no such user on this node: no-such-user-x" in bad.stderr
        assert local.run("start-replicated", "bad", "--user", "x;y", "--", "true").returncode == 2
    finally:
        local.cleanup()
