"""Optimizer rules on constructed snapshots: each rule fires on its condition and stays quiet otherwise."""

from __future__ import annotations

import json

import pytest

from foundation_cli.core import health_monitor as hm
from foundation_cli.core import optimizer
from foundation_cli.core.health_export import prometheus
from foundation_cli.core.rules import RULES
from foundation_cli.raw.operation import RawOperation


def make_snap(*, servers: int = 3, members: list[tuple[str, str, str, str]] | None = None, **parts) -> hm.Snapshot:
    """A healthy 3-server, encrypted snapshot on a LAN; ``parts`` replace whole sections."""
    names = [f"s{i}" for i in range(servers)]
    srv = hm.Servers(
        count=servers,
        voters=servers,
        leader=names[0] if names else None,
        failure_tolerance=max(0, (servers - 1) // 2),
        healthy=True,
        autopilot_status=200,
        cleanup_dead_servers=True,
        last_contact_threshold_ms=200.0,
        max_last_contact_ms=10.0,
        servers=[
            hm.ServerInfo(
                name=n,
                address=f"10.0.0.{i}:8300",
                leader=i == 0,
                serf_status="alive",
                last_contact_ms=0.0 if i == 0 else 10.0,
                version="1.8.7",
            )
            for i, n in enumerate(names)
        ],
        autopilot_config={
            "CleanupDeadServers": True,
            "LastContactThreshold": "200ms",
            "ModifyIndex": 4,
            "CreateIndex": 4,
        },
    )
    if members is None:
        members = [(n, f"10.0.0.{i}", "alive", "server") for i, n in enumerate(names)]
    mem = hm.HealthMonitor._members(
        [
            {"Name": n, "Addr": a, "Status": {"alive": 1, "left": 3, "failed": 4}[st],
             "Tags": {"role": "consul" if role == "server" else "node", "build": f"{ver}:abc", "acls": "0"}}
            for n, a, st, role, *rest in members
            for ver in [rest[0] if rest else "1.8.7"]
        ]
    )  # fmt: skip
    snap = hm.Snapshot(
        taken_at=0.0,
        duration_ms=1.0,
        window_s=1.0,
        consul_addr="http://10.0.0.0:8500",
        cluster=hm.ClusterInfo(cluster_id="c1", datacenter="dc1", mode="ssh", agent_node="s0", agent_addr="10.0.0.0", agent_is_server=True, agent_version="1.8.7"),
        servers=srv,
        members=mem,
        services=[],
        checks=hm.Checks(total=3, by_state={"passing": 3}),
        sessions=hm.Sessions(),
        churn=hm.Churn(window_s=1.0),
        events=hm.Events(window_s=1.0),
        runtime=hm.Runtime(goroutines=80, alloc_bytes=1e7, sys_bytes=7e7, gc_pause_total_ns=1e6),
        agent=hm.AgentConfig(server=True, raft_multiplier=1.0, raft_election_timeout_ms=1000.0, gossip_encrypted=True, acls_enabled=False, gossip_probe_interval_ms=1000.0, gossip_probe_timeout_ms=500.0, gossip_suspicion_mult=4),
        coordinates=hm.Coordinates(nodes=servers),
        singleton=hm.SingletonConfig(defaults={"lock_delay": 2.5, "fence_timeout": 1.2}),
        reads={"agent_self": RawOperation(kind="consul-http", method="GET", url="http://10.0.0.0:8500/v1/agent/self", status=200)},
    )  # fmt: skip
    for name, value in parts.items():
        setattr(snap, name, value)
    return snap


def ids(snap) -> dict[str, str]:
    return {r.id: r.severity for r in optimizer.evaluate(snap).recommendations}


def test_healthy_cluster_has_no_warnings():
    report = optimizer.evaluate(make_snap())
    assert report.rule_errors == {} and report.read_errors == {}
    assert [r.severity for r in report.recommendations if r.severity != "info"] == []
    # ACLs off with gossip encrypted is a note, not a warning.
    assert ids(make_snap()) == {"security.acls": "info"}


@pytest.mark.parametrize(
    ("count", "severity"), [(1, "warning"), (2, "warning"), (4, "warning"), (6, "warning"), (7, "warning")]
)
def test_server_count(count, severity):
    assert ids(make_snap(servers=count))["servers.count"] == severity


@pytest.mark.parametrize("count", [3, 5])
def test_server_count_quiet_for_3_and_5(count):
    assert "servers.count" not in ids(make_snap(servers=count))


def test_single_server_local_mode_is_a_note():
    snap = make_snap(servers=1)
    snap.cluster.mode = "local"
    assert ids(snap)["servers.count"] == "info"


def test_raft_multiplier_restart():
    snap = make_snap()
    snap.agent.raft_multiplier, snap.agent.raft_election_timeout_ms = 5.0, 5000.0
    rec = next(r for r in optimizer.evaluate(snap).recommendations if r.rule == "raft.multiplier")
    assert rec.applies == "rolling-restart" and not rec.auto
    assert "raft_multiplier = 1" in rec.changes[0].config
    snap.agent.dev_mode = True
    assert not any(k.startswith("raft.multiplier") for k in ids(snap))


def test_leader_last_contact_over_threshold():
    snap = make_snap()
    snap.servers.max_last_contact_ms = 450.0
    assert ids(snap)["raft.last_contact"] == "warning"


def test_cleanup_dead_servers_is_a_live_cas_put():
    snap = make_snap()
    snap.servers.cleanup_dead_servers = False
    snap.servers.autopilot_config["CleanupDeadServers"] = False
    assert "autopilot.cleanup_dead_servers" not in ids(snap)  # no dead servers: nothing to clean
    snap.servers.dead = ["s2"]
    rec = next(r for r in optimizer.evaluate(snap).recommendations if r.rule == "autopilot.cleanup_dead_servers")
    change = rec.changes[0]
    assert rec.auto and rec.applies == "live"
    assert (change.method, change.path, change.params) == (
        "PUT",
        "/v1/operator/autopilot/configuration",
        [("cas", "4")],
    )
    body = json.loads(change.body)
    assert body["CleanupDeadServers"] is True and body["LastContactThreshold"] == "200ms" and "ModifyIndex" not in body


def test_failed_member_force_leave():
    snap = make_snap(members=[("s0", "10.0.0.0", "alive", "server"), ("s1", "10.0.0.1", "alive", "server"), ("s2", "10.0.0.2", "alive", "server"), ("web-1", "10.0.0.9", "failed", "client")])  # fmt: skip
    rec = next(r for r in optimizer.evaluate(snap).recommendations if r.rule == "members.failed")
    assert rec.id == "members.failed:web-1" and rec.auto
    assert rec.changes[0].path == "/v1/agent/force-leave/web-1"
    data = optimizer.evaluate(snap).to_dict()
    item = next(r for r in data["recommendations"] if r["id"] == "members.failed:web-1")
    assert item["changes"][0]["cli"] == "consul force-leave web-1"
    assert item["changes"][0]["api"]["curl"].endswith("http://10.0.0.0:8500/v1/agent/force-leave/web-1")


def test_version_skew():
    snap = make_snap(members=[("s0", "10.0.0.0", "alive", "server"), ("s1", "10.0.0.1", "alive", "server", "1.8.6"), ("s2", "10.0.0.2", "alive", "server")])  # fmt: skip
    assert ids(snap)["members.version_skew"] == "warning"
    assert "members.version_skew" not in ids(make_snap())


def test_flapping_check_thresholds():
    snap = make_snap()
    snap.checks.flapping = [
        hm.FlappingCheck(
            "n1", "web-http", "web", "web", "http", 4, ["passing", "critical", "passing", "critical", "passing"], 10.0
        )
    ]
    rec = next(r for r in optimizer.evaluate(snap).recommendations if r.rule == "checks.flapping")
    assert rec.id == "checks.flapping:n1/web-http" and not rec.auto
    assert "success_before_passing = 3" in rec.changes[0].config


def test_singleton_unsafe_timing_is_critical_and_live():
    snap = make_snap()
    snap.singleton.fence_timeout_s, snap.singleton.fence_timeout_raw = 3.0, "3s"
    rec = next(r for r in optimizer.evaluate(snap).recommendations if r.rule == "singleton.timing")
    assert rec.severity == "critical" and rec.auto
    assert rec.applies == "next-session"  # agents read lock-delay when they next create their session
    assert rec.changes[0].path == "/v1/kv/foundation/config/singleton.lock_delay"
    assert rec.changes[0].params == [("cas", "0")]
    assert float(rec.changes[0].body.decode().rstrip("s")) > 3.0 + 0.6 + 0.5


def test_singleton_failover_small_busy_cluster():
    snap = make_snap(services=[hm.FoundationService(name="cron", mode="singleton", spec=True)])
    assert "singleton.failover" not in ids(snap)  # default lock-delay is already short
    snap.singleton.lock_delay_s, snap.singleton.lock_delay_raw, snap.singleton.lock_delay_index = 20.0, "20s", 42
    rec = next(r for r in optimizer.evaluate(snap).recommendations if r.rule == "singleton.failover")
    assert rec.severity == "warning" and rec.changes[0].params == [("cas", "42")] and rec.changes[0].body == b"2.5s"


def test_singleton_chatter_large_stable_cluster():
    members = [(f"n{i}", f"10.0.1.{i}", "alive", "client") for i in range(60)]
    snap = make_snap(members=members, services=[hm.FoundationService(name="cron", mode="singleton", spec=True)])
    snap.singleton.lock_delay_s, snap.singleton.lock_delay_raw = 0.5, "500ms"
    snap.singleton.fence_timeout_s = 0.1
    assert ids(snap)["singleton.chatter"] == "info"


def test_gossip_tuning_only_when_measured():
    snap = make_snap()
    snap.coordinates = hm.Coordinates(nodes=10, rtt_p50_ms=2.0, rtt_p99_ms=5.0, rtt_max_ms=6.0, max_node="n3")
    assert "gossip.probe_timeout" not in ids(snap)
    snap.coordinates = hm.Coordinates(nodes=10, rtt_p50_ms=300.0, rtt_p99_ms=700.0, rtt_max_ms=800.0, max_node="n3")
    rec = next(r for r in optimizer.evaluate(snap).recommendations if r.rule == "gossip.probe_timeout")
    assert 'probe_timeout = "1100ms"' in rec.changes[0].config
    snap.coordinates = hm.Coordinates(nodes=2, rtt_p99_ms=700.0)  # too few nodes to say anything
    assert "gossip.probe_timeout" not in ids(snap)


def test_events_rules():
    snap = make_snap()
    snap.events = hm.Events(window_s=2.0, buffered=20, new=10, per_min=300.0, max_size_bytes=480, near_limit=2)
    found = ids(snap)
    assert found["events.rate"] == "warning" and found["events.payload"] == "info"


def test_security_rules():
    snap = make_snap()
    snap.agent.gossip_encrypted = False
    found = ids(snap)
    assert found["security.gossip_encryption"] == "warning" and found["security.acls"] == "warning"
    loop = make_snap(members=[("s0", "127.0.0.1", "alive", "server")], servers=1)
    loop.agent.gossip_encrypted = False
    assert ids(loop)["security.gossip_encryption"] == "info"


def test_broken_rule_is_reported_not_fatal(monkeypatch):
    def boom(snap):
        raise RuntimeError("bad rule")

    monkeypatch.setattr("foundation_cli.core.optimizer.RULES", [*RULES, ("test.boom", boom)])
    report = optimizer.evaluate(make_snap())
    assert report.rule_errors == {"test.boom": "RuntimeError: bad rule"}


def test_json_matches_schema():
    jsonschema = pytest.importorskip("jsonschema")
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "foundation_cli" / "schemas"
    snap = make_snap(servers=2)
    snap.singleton.fence_timeout_s = 3.0
    jsonschema.validate(optimizer.evaluate(snap).to_dict(), json.loads((root / "optimize.json").read_text()))
    jsonschema.validate(snap.to_dict(), json.loads((root / "status.json").read_text()))


def test_prometheus_exposition_format():
    text = prometheus(make_snap())
    lines = text.splitlines()
    assert "foundation_servers 3" in lines and 'foundation_members{state="alive"} 3' in lines
    names = [line.split()[2] for line in lines if line.startswith("# TYPE")]
    assert len(names) == len(set(names))  # one TYPE per family
    for line in lines:
        assert line.startswith("#") or line.split()[-1].replace(".", "").replace("e", "").replace("-", "").isdigit()


def test_vivaldi_rtt_and_durations():
    a = {"Vec": [0.0] * 8, "Height": 0.0001, "Adjustment": 0.0}
    b = {"Vec": [0.003] + [0.0] * 7, "Height": 0.0001, "Adjustment": 0.0}
    assert hm.vivaldi_rtt_ms(a, b) == pytest.approx(3.2)
    assert hm.parse_duration_ms("1m0.5s") == pytest.approx(60500.0)
    assert hm.parse_duration_ms("350µs") == pytest.approx(0.35)
    assert hm.parse_duration_ms(None) is None


def test_flap_history_carries_across_snapshots():
    mon = hm.HealthMonitor(lambda: None)
    raw = lambda status: {"last": [{"Node": "n", "CheckID": "c", "Status": status}], "sequences": {}, "elapsed": 1.0}  # noqa: E731
    seen = [mon._checks(mon._merge_history(raw(s)), 1.0).flapping for s in ("passing", "critical", "passing")]
    assert seen[0] == [] and seen[1] == [] and seen[2][0].transitions == 2


def test_assemble_uses_the_429_autopilot_body_and_member_view():
    mon = hm.HealthMonitor(lambda: None, consul_addr="http://x:8500")
    results = {
        "raft": {
            "raft": {
                "Servers": [
                    {"ID": "a", "Node": "s0", "Address": "10.0.0.1:8300", "Leader": True, "Voter": True},
                    {"ID": "b", "Node": "s1", "Address": "10.0.0.2:8300", "Leader": False, "Voter": True},
                ]
            },
            "autopilot_config": {"CleanupDeadServers": False, "LastContactThreshold": "200ms", "ModifyIndex": 7},
        },
        "autopilot": {
            "status": 429,
            "body": {
                "Healthy": False,
                "FailureTolerance": 0,
                "Servers": [
                    {"ID": "a", "SerfStatus": "alive", "LastContact": "0s", "Healthy": True, "Version": "1.8.7"},
                    {"ID": "b", "SerfStatus": "alive", "LastContact": "1.5s", "Healthy": False, "Version": "1.8.7"},
                ],
            },
        },
        "members": [
            {"Name": "s0", "Addr": "10.0.0.1", "Status": 1, "Tags": {"role": "consul", "build": "1.8.7:x"}},
            {"Name": "s1", "Addr": "10.0.0.2", "Status": 4, "Tags": {"role": "consul", "build": "1.8.7:x"}},
        ],
    }
    snap = mon._assemble(results, {}, {}, 0.0)
    assert snap.servers.autopilot_status == 429 and snap.servers.healthy is False
    assert snap.servers.failure_tolerance == 0 and snap.servers.dead == ["s1"]  # gossip says failed
    assert snap.servers.max_last_contact_ms is None  # dead followers do not count as slow
    found = {r.id for r in optimizer.evaluate(snap).recommendations}
    assert {"autopilot.cleanup_dead_servers", "members.failed:s1", "servers.count"} <= found
    assert "raft.last_contact" not in found
