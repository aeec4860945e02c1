"""The secure-defaults plan step of `up` (core/secure_up.py): tokens, TLS files and config per host."""

from __future__ import annotations

import json
import shutil

import pytest

from foundation_cli.core import bootstrap, tls
from foundation_cli.core import cluster_config as cc
from foundation_cli.core.bootstrap import Probe
from foundation_cli.core.orchestrator import UpRun
from foundation_cli.core.secure_up import api_url, secure_plan
from tests.unit.up_runs import planned_run


def _run(text: str, tmp_path, monkeypatch, state: dict | None = None) -> UpRun:
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path / "state"))
    names = [h.address for h in cc.parse(text).hosts]
    probes = {a: Probe(hostname=f"n{i}", addr=f"10.0.0.{i}") for i, a in enumerate(names, 1)}
    return planned_run(text, probes=probes, state=state or {})


def test_acl_only_every_node_gets_its_own_tokens_and_no_master(tmp_path, monkeypatch):
    run = _run("hosts: [a, b]\nservers: 1\ntls: {enabled: false}\n", tmp_path, monkeypatch)
    secure_plan(run)
    assert run.token is None and run.cacert is None
    seen = set()
    for p in run.plans.values():
        acl = p.consul_config["acl"]
        assert acl["default_policy"] == "deny" and acl["enable_token_persistence"] is True
        assert set(acl["tokens"]) == {"agent"}  # never the management ("master") token on a host
        tokens = run.node_tokens[p.node_name]
        assert acl["tokens"]["agent"] == tokens.consul != tokens.agent
        assert p.files[bootstrap.AGENT_TOKEN_FILE] == (tokens.agent.encode() + b"\n", 0o600)
        assert p.agent_env["CONSUL_HTTP_TOKEN_FILE"] == bootstrap.AGENT_TOKEN_FILE
        assert "ports" not in p.consul_config or "https" not in p.consul_config["ports"]
        seen |= {tokens.consul, tokens.agent}
    assert len(seen) == 4
    assert api_url(run, "10.0.0.1") == "http://10.0.0.1:8500"


def test_tokens_kept_from_the_state_file(tmp_path, monkeypatch):
    state = {"mode": "ssh", "node_tokens": {"n1": {"consul": "c-kept-1", "agent": "a-kept-1"}}}
    run = _run("hosts: [a]\ntls: {enabled: false}\n", tmp_path, monkeypatch, state)
    secure_plan(run)
    assert run.plans["a"].consul_config["acl"]["tokens"]["agent"] == "c-kept-1"


@pytest.mark.skipif(not shutil.which("consul"), reason="needs the consul CLI (consul tls)")
def test_tls_servers_get_cert_and_key_clients_auto_encrypt_http_on_loopback(tmp_path, monkeypatch):
    run = _run("hosts: [a, b]\nservers: 1\n", tmp_path, monkeypatch)
    secure_plan(run)
    server, client = run.plans["a"], run.plans["b"]
    assert run.cacert == str(tls.ca_paths()[0]) and api_url(run, "10.0.0.1") == "https://10.0.0.1:8501"
    assert server.consul_config["ports"]["https"] == 8501
    # A client's auto_encrypt certificate is signed by the Connect CA, which the CLI does not trust:
    # it serves no HTTPS at all (its API is plain HTTP on loopback, for its node agent).
    assert "https" not in (client.consul_config.get("ports") or {})
    for p in (server, client):
        conf = p.consul_config
        assert conf["addresses"] == {"http": "127.0.0.1"}
        assert conf["verify_outgoing"] and conf["verify_server_hostname"] and conf["verify_incoming_rpc"]
        assert p.files[tls.HOST_CA][1] == 0o644 and b"BEGIN CERTIFICATE" in p.files[tls.HOST_CA][0]
    assert server.consul_config["auto_encrypt"] == {"allow_tls": True}
    assert server.files[tls.HOST_KEY][1] == 0o600 and b"PRIVATE KEY" in server.files[tls.HOST_KEY][0]
    assert client.consul_config["auto_encrypt"] == {"tls": True, "ip_san": ["10.0.0.2"]}
    assert tls.HOST_KEY not in client.files and "cert_file" not in client.consul_config
    # Everything on the operator's machine is private.
    for path in (tmp_path / "state" / "tls").iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
    json.dumps(server.consul_config)  # a config Consul can read


def test_own_certificates_still_mean_https_on_the_lan_and_http_on_loopback(tmp_path, monkeypatch):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    text = f"hosts: [a]\ntls: {{ca_file: {ca}, cert_file: /etc/x/server.pem, key_file: /etc/x/server-key.pem}}\n"
    run = _run(text, tmp_path, monkeypatch)
    secure_plan(run)
    conf = run.plans["a"].consul_config
    assert conf["ca_file"] == str(ca) and conf["cert_file"] == "/etc/x/server.pem"
    assert conf["addresses"] == {"http": "127.0.0.1"} and conf["ports"]["https"] == 8501
    assert "verify_incoming" not in conf and conf["verify_incoming_https"] is False and conf["verify_incoming_rpc"]
    assert api_url(run, "10.0.0.1") == "https://10.0.0.1:8501" and run.cacert == str(ca)
    assert tls.HOST_CA not in run.plans["a"].files  # their files are theirs to place


def test_snapshot_token_on_servers_only_and_kept_from_the_state(tmp_path, monkeypatch):
    run = _run("hosts: [a, b, c, d]\nservers: 3\ntls: {enabled: false}\n", tmp_path, monkeypatch)
    secure_plan(run)
    token = run.snapshot_token
    assert token and token not in {t for n in run.node_tokens.values() for t in (n.consul, n.agent)}
    servers = [p for p in run.plans.values() if p.server]
    clients = [p for p in run.plans.values() if not p.server]
    assert len(servers) == 3 and len(clients) == 1
    for p in servers:
        assert p.files[bootstrap.SNAPSHOT_TOKEN_FILE] == (token.encode() + b"\n", 0o600)
        assert bootstrap.SNAPSHOT_TOKEN_FILE not in p.remove_files
    for p in clients:  # never on a client: not written, and removed if a former role left it there
        assert bootstrap.SNAPSHOT_TOKEN_FILE not in p.files and bootstrap.SNAPSHOT_TOKEN_FILE in p.remove_files
        assert token not in json.dumps(p.consul_config) and token not in json.dumps(p.agent_env)
    again = _run("hosts: [a]\ntls: {enabled: false}\n", tmp_path, monkeypatch, {"mode": "ssh", "snapshot_token": "s1"})
    secure_plan(again)
    assert again.snapshot_token == "s1"
    off = _run("hosts: [a]\ntls: {enabled: false}\nacl: {enabled: false}\n", tmp_path, monkeypatch)
    secure_plan(off)
    assert off.snapshot_token is None and bootstrap.SNAPSHOT_TOKEN_FILE not in off.plans["a"].files


def test_api_address_is_a_consul_address_with_ipv6_brackets(tmp_path, monkeypatch):
    run = _run("hosts: [a]\ntls: {enabled: false}\n", tmp_path, monkeypatch)
    from foundation_cli.core.secure_up import api_address

    assert api_address(run, "fd00::1").url == "http://[fd00::1]:8500"
    assert api_address(run, "fd00::1", https=True).url == "https://[fd00::1]:8501"
    assert api_url(run, "10.0.0.1", https=True) == "https://10.0.0.1:8501"


class _StatusServer:
    """A local HTTP server answering ``/v1/status/leader`` with ``leader`` (what a server says)."""

    def __init__(self, leader: str) -> None:
        import http.server
        import threading

        body = json.dumps(leader).encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                self.send_response(200 if self.path == "/v1/status/leader" else 404)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def _leader_run(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    return planned_run("hosts: [a, b, c, d]\nservers: 3\ntls: {enabled: false}\n", wait_timeout=0.3)


def test_the_acl_step_goes_to_the_leader_a_server_names(tmp_path, monkeypatch):
    """A follower of a new cluster refuses ACL calls until it left legacy mode; the leader does not."""
    import time

    from foundation_cli.core.secure_up import _on_the_leader
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    run = _leader_run(tmp_path, monkeypatch)
    server = _StatusServer("10.0.0.2:8300")  # b leads
    try:
        client = consul_tool.connect(Settings(consul_addr=server.url), timeout=2)
        leader = _on_the_leader(run, client, None, time.monotonic() + 5)
        assert leader is not None and leader.http.base_uri == api_url(run, "10.0.0.2")
        server_d = _StatusServer("10.0.0.9:8300")  # a server this run does not know: ask the one we have
        try:
            other = consul_tool.connect(Settings(consul_addr=server_d.url), timeout=2)
            assert _on_the_leader(run, other, None, time.monotonic() + 5) is None
        finally:
            server_d.close()
    finally:
        server.close()


def test_no_leader_in_time_is_said_with_what_the_servers_answered(tmp_path, monkeypatch):
    import time

    from foundation_cli.core.secure_up import _on_the_leader
    from foundation_cli.errors import UnreachableError
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    run = _leader_run(tmp_path, monkeypatch)
    server = _StatusServer("")  # answers, no leader yet
    try:
        client = consul_tool.connect(Settings(consul_addr=server.url), timeout=2)
        with pytest.raises(UnreachableError, match="no Raft leader after 0 s, which the ACL step needs: the servers"):
            _on_the_leader(run, client, None, time.monotonic() + 0.3)
    finally:
        server.close()
