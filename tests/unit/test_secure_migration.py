"""The levels of an open cluster's migration to ACLs + TLS (core/secure_migration.py), as pure config logic.

The property that keeps quorum: at no level does a server enforce something (TLS on incoming RPC,
TLS on outgoing RPC, ACL deny, HTTP off the LAN) that another server at the previous level does
not speak yet; what a host already enforced is never relaxed.
"""

from __future__ import annotations

import dataclasses

from foundation_cli.core import tls
from foundation_cli.core.secure_migration import LEVELS, levels, needed, relaxed
from tests.unit.up_runs import planned_run

OPEN = {
    "server": True,
    "client_addr": "127.0.0.1 10.0.0.1",
    "ports": {"http": 8500},
    "encrypt": "k",
}


def _final() -> dict:
    conf = dict(OPEN)
    conf["acl"] = {
        "enabled": True,
        "default_policy": "deny",
        "enable_token_persistence": True,
        "tokens": {"agent": "t"},
    }
    conf.update(tls.agent_config(server=True, address="10.0.0.1"))
    conf["ports"] = {"http": 8500, "https": 8501}
    return conf


def test_open_server_offer_level_verifies_nothing_and_allows_everything():
    offer = relaxed(_final(), OPEN, "offer")
    assert offer["ca_file"] == tls.HOST_CA and offer["cert_file"] == tls.HOST_CERT  # TLS offered
    assert offer["ports"]["https"] == 8501 and offer["auto_encrypt"] == {"allow_tls": True}
    assert offer["verify_incoming_rpc"] is False and offer["verify_outgoing"] is False
    assert offer["verify_server_hostname"] is False
    assert offer["acl"]["enabled"] is True and offer["acl"]["default_policy"] == "allow"
    assert offer["acl"]["tokens"] == {"agent": "t"}
    assert "addresses" not in offer  # HTTP stays on the LAN address (client_addr) for who uses it


def test_outgoing_level_speaks_tls_but_still_accepts_plain_and_denies():
    out = relaxed(_final(), OPEN, "outgoing")
    assert out["verify_outgoing"] is True and out["verify_server_hostname"] is True
    assert out["verify_incoming_rpc"] is False
    assert out["acl"]["default_policy"] == "deny"
    assert "addresses" not in out


def test_final_level_is_the_plan():
    assert relaxed(_final(), OPEN, "final") == _final()
    assert list(levels(_final(), OPEN)) == list(LEVELS)


def test_no_level_enforces_incoming_before_every_server_sends_tls():
    """Each level's enforcement is spoken by every server at the previous level (quorum kept)."""
    lv = levels(_final(), OPEN)
    for before, after in zip(LEVELS, LEVELS[1:], strict=False):
        if lv[after].get("verify_incoming_rpc"):
            assert lv[before]["verify_outgoing"], (before, after)
        if lv[after].get("verify_outgoing"):
            assert lv[before].get("cert_file") and lv[before].get("ca_file"), (before, after)


def test_what_a_host_already_enforces_is_never_relaxed():
    secure = _final()
    assert not needed(secure, secure)
    for level in LEVELS:
        assert relaxed(secure, secure, level) == secure
    # a secured host whose config changes for another reason goes straight to it
    changed = {**secure, "retry_join": ["10.0.0.9"]}
    assert not needed(changed, secure) and relaxed(changed, secure, "offer") == changed


def test_acl_only_migration_allow_first_then_deny():
    final = {**OPEN, "acl": {"enabled": True, "default_policy": "deny"}}
    assert needed(final, OPEN)
    assert relaxed(final, OPEN, "offer")["acl"]["default_policy"] == "allow"
    assert relaxed(final, OPEN, "outgoing") == final
    # ACLs already on with allow: tightened at the outgoing level too
    allow = {**OPEN, "acl": {"enabled": True, "default_policy": "allow"}}
    assert relaxed(final, allow, "offer")["acl"]["default_policy"] == "allow"


def test_tls_only_migration_keeps_acl_off():
    final = dict(OPEN, **tls.agent_config(server=True, address="10.0.0.1"))
    offer = relaxed(final, OPEN, "offer")
    assert "acl" not in offer and offer["verify_incoming_rpc"] is False and needed(final, OPEN)


def test_an_existing_loopback_http_binding_is_kept():
    existing = {**OPEN, "addresses": {"http": "127.0.0.1"}, "acl": {"enabled": True, "default_policy": "deny"}}
    final = _final()
    assert relaxed(final, existing, "offer")["addresses"] == {"http": "127.0.0.1"}


def test_migrate_order_servers_offer_then_acls_then_clients_then_enforce(tmp_path, monkeypatch):
    """Every server is at a level before any goes to the next; ACLs and clients between offer and outgoing;
    a server that is new to the cluster starts only once the others enforce TLS."""
    from foundation_cli.core import secure_migration
    from foundation_cli.core.bootstrap import render_config

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    # parallel=1: the events in a fixed order
    run = planned_run("hosts: [a, b, c, d, e]\nservers: 3\ntls: {enabled: false}\n", parallel=1)
    cfg = run.cfg
    from foundation_cli.core.secure_up import secure_plan

    secure_plan(run)
    events: list[tuple[str, str]] = []
    servers = [h for h in cfg.hosts if run.plans[h.address].server]
    for h in servers[:2] + cfg.hosts[3:4]:  # two running open servers, one running open client
        p = run.probes[h.address]
        conf = dict(run.plans[h.address].consul_config)
        conf.pop("acl")
        run.probes[h.address] = dataclasses.replace(p, config=render_config(conf), consul_running=True)
    run.probes["c"] = dataclasses.replace(run.probes["c"], consul_running=False)  # a new server

    def restart(run, h, config):
        events.append((h.address, config["acl"]["default_policy"]))
        run.probes[h.address] = dataclasses.replace(run.probes[h.address], config=render_config(config))

    monkeypatch.setattr(secure_migration, "_restart_with", restart)
    monkeypatch.setattr(secure_migration, "wait_after", lambda *a, **k: None)
    monkeypatch.setattr(secure_migration, "order", lambda run, servers: servers)
    monkeypatch.setattr(secure_migration, "tolerance", lambda run, servers: (1, None))
    monkeypatch.setattr(secure_migration.secure_up, "acl_bootstrap", lambda run: events.append(("acl", "")))
    rolling = servers[:2]
    rest = [h for h in cfg.hosts if h not in rolling]
    secure_migration.migrate(
        run,
        rolling,
        rest,
        apply_host=lambda run, h: events.append((h.address, "apply")),
        set_http_addrs=lambda run: None,
    )
    assert events == [
        ("a", "allow"),
        ("b", "allow"),
        ("acl", ""),
        ("a", "apply"),  # node agents on the servers: their tokens (their Consul config unchanged)
        ("b", "apply"),
        ("d", "apply"),  # clients (and a host with no Consul yet) at their final config
        ("e", "apply"),
        ("a", "deny"),  # ACL-only migration: the next level is the final one
        ("b", "deny"),
        ("c", "apply"),  # the new server last
    ]
    assert run.acl_bootstrapped


def test_the_health_wait_uses_the_token_we_hold_before_the_acl_step(tmp_path, monkeypatch):
    """On a secured cluster anonymous sees no members and no autopilot health: the wait would never end."""
    from foundation_cli.core import cluster_config as cc
    from foundation_cli.core import orchestrator, secure_migration

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    cfg = cc.parse("hosts: [a]\n")
    run = orchestrator.UpRun(cfg=cfg, hosts=cfg.hosts, opts=orchestrator.ssh_options(cfg), say=lambda _h, _m: None)
    assert secure_migration._token(run) is None
    run.state = {"mode": "ssh", "token": "held"}
    assert secure_migration._token(run) == "held"
    run.explicit_token = "given"
    assert secure_migration._token(run) == "given"
    run.token = "made"
    assert secure_migration._token(run) == "made"


def test_before_the_bootstrap_the_health_wait_asks_a_server_with_acls_still_off(tmp_path, monkeypatch):
    """A server with ACLs on answers anonymous 403 ("ACL not found") while the leader has them off."""
    from foundation_cli.core import secure_migration
    from foundation_cli.core.bootstrap import render_config
    from foundation_cli.tools import consul as consul_tool

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    run = planned_run("hosts: [a, b, c]\ntls: {enabled: false}\n")
    cfg = run.cfg
    with_acl = render_config({**OPEN, "acl": {"enabled": True, "default_policy": "allow"}})
    run.probes["a"] = dataclasses.replace(run.probes["a"], config=with_acl)  # restarted at the offer level
    run.probes["c"] = dataclasses.replace(run.probes["c"], config=render_config(OPEN))
    asked: list[str] = []
    monkeypatch.setattr(consul_tool, "connect", lambda settings, **_k: asked.append(settings.consul_addr))
    secure_migration._client(run, cfg.hosts, "b")
    assert asked == ["http://10.0.0.3:8500"]  # c, not a


def test_dry_run_says_the_script_is_the_final_state_only(tmp_path, monkeypatch):
    from foundation_cli.core import secure_migration
    from foundation_cli.core.bootstrap import render_config
    from tests.unit.up_runs import planned_run

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    run = planned_run("hosts: [a, b, c]\ntls: {enabled: false}\n")
    cfg = run.cfg
    secure_migration.dry_run_note(run, cfg.hosts)
    assert run.result.warnings == []  # nothing running: nothing to migrate
    for h in cfg.hosts:
        run.probes[h.address] = dataclasses.replace(
            run.probes[h.address], config=render_config(OPEN), consul_running=True
        )
    secure_migration.dry_run_note(run, cfg.hosts)
    assert len(run.result.warnings) == 1 and "lose quorum" in run.result.warnings[0]


def test_dry_run_acl_step_asks_an_open_cluster_as_it_runs_now(tmp_path, monkeypatch):
    """`up --dry-run` on an open cluster: no HTTPS and no CA file yet, so plain HTTP (was an internal error)."""
    from foundation_cli.core import cluster_config as cc
    from foundation_cli.core import orchestrator, secure_up
    from foundation_cli.core.bootstrap import HostResult, Probe, render_config

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    cfg = cc.parse("hosts: [a]\n")
    run = orchestrator.UpRun(
        cfg=cfg,
        hosts=cfg.hosts,
        opts=orchestrator.ssh_options(cfg),
        say=lambda _h, _m: None,
        results={h.address: HostResult(alias=h.address) for h in cfg.hosts},
    )
    run.probes = {"a": Probe(hostname="a", addr="10.0.0.1")}
    orchestrator.plan(run)
    run.probes["a"] = dataclasses.replace(run.probes["a"], config=render_config(OPEN), consul_running=True)
    run.http_addrs, run.cacert = ["https://10.0.0.1:8501"], str(tmp_path / "tls" / "missing-ca.pem")
    assert secure_up._current_api(run, ["a"]) == ("http://10.0.0.1:8500", None)
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    run.cacert = str(ca)
    run.probes["a"] = dataclasses.replace(
        run.probes["a"], config=render_config({**OPEN, "ports": {"http": 8500, "https": 8501}})
    )
    assert secure_up._current_api(run, ["a"]) == ("https://10.0.0.1:8501", str(ca))


class _FakeCluster:
    """members() and autopilot_health() answers in turn (a unit test of the shared wait only)."""

    def __init__(self, members, health):
        self.members_seq, self.health_seq = list(members), list(health)
        self.agent = self
        self.operator = self

    def members(self):
        item = self.members_seq.pop(0) if len(self.members_seq) > 1 else self.members_seq[0]
        if isinstance(item, Exception):
            raise item
        return item

    def autopilot_health(self):
        return self.health_seq.pop(0) if len(self.health_seq) > 1 else self.health_seq[0]


def test_wait_recovered_needs_alive_member_then_healthy_at_the_old_tolerance():
    import pytest

    from foundation_cli.core import upgrade
    from foundation_cli.errors import FoundationError, UnreachableError

    alive = [{"Name": "n2", "Status": 1}]
    cluster = _FakeCluster(
        [UnreachableError("restarting"), [{"Name": "n2", "Status": 4}], alive],
        [
            {"Healthy": False, "FailureTolerance": 0},
            {"Healthy": True, "FailureTolerance": 0},
            {"Healthy": True, "FailureTolerance": 1},
        ],
    )
    upgrade.wait_recovered(cluster, "n2", server=True, tolerance=1, timeout=5, interval=0)
    assert cluster.health_seq == [{"Healthy": True, "FailureTolerance": 1}]  # waited through both unhealthy answers
    client = _FakeCluster([alive], [{"Healthy": False, "FailureTolerance": 0}])
    upgrade.wait_recovered(client, "n2", server=False, tolerance=1, timeout=5, interval=0)  # a client: alive is enough
    with pytest.raises(FoundationError, match="n2 not healthy within 0s after its restart: autopilot healthy=False"):
        upgrade.wait_recovered(client, "n2", server=True, tolerance=1, timeout=0, interval=0)
