"""Pure logic of the day-2 operations: labels, snapshot rotation, per-host SSH settings, drain marks."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foundation_cli.core import cluster_config, drain, snapshots
from foundation_cli.errors import ConfigError
from foundation_cli.facades import remote
from tests.unit.up_runs import planned_run


def test_labels_become_node_meta():
    from foundation_cli.core.orchestrator import consul_config_for

    cfg = cluster_config.parse("hosts:\n  - address: 10.0.0.5\n    labels: {usb: zigbee, rack: r1}\n  - 10.0.0.6\n")
    assert cfg.hosts[0].labels == {"usb": "zigbee", "rack": "r1"} and cfg.hosts[1].labels == {}
    conf = consul_config_for(
        cfg,
        node_name="n1",
        address="10.0.0.5",
        server=True,
        server_addrs=["10.0.0.5"],
        gossip_key="k",
        cluster_id="c1",
        bootstrap_expect=1,
        labels=cfg.hosts[0].labels,
    )
    assert conf["node_meta"] == {"usb": "zigbee", "rack": "r1", "foundation_cluster": "c1"}


@pytest.mark.parametrize(
    "labels,needle",
    [
        ("{consul-x: a}", "consul-"),
        ("{'a b': c}", "letters, digits"),
        ("{usb: [1]}", "must be a string"),
        ("[usb]", "labels must be a mapping"),
    ],
)
def test_bad_labels_name_their_place(labels, needle):
    with pytest.raises(ConfigError) as exc:
        cluster_config.parse(f"hosts:\n  - address: 10.0.0.5\n    labels: {labels}\n")
    assert needle in exc.value.message and "foundation.yaml:3:" in exc.value.message


def _entry(i: int) -> snapshots.SnapshotEntry:
    return snapshots.SnapshotEntry(f"2026120{i}T000000Z", "n1", f"/x/{i}.snap", 10, "ab", float(i))


@given(st.integers(min_value=0, max_value=30), st.integers(min_value=-3, max_value=40))
def test_rotation_keeps_the_newest(n, keep):
    current = [_entry(i) for i in range(n)]
    pruned = snapshots.to_prune(current, keep)
    kept = [e for e in current if e not in pruned]
    assert len(kept) == min(n, max(1, keep))
    assert all(p.id < k.id for p in pruned for k in kept)


def test_snapshot_index_round_trip_and_bad_entries():
    e = _entry(3)
    item = {"Key": "foundation/snapshots/" + e.id, "Value": snapshots.index_value(e).encode()}
    assert snapshots.entries([item, {"Key": "foundation/snapshots/bad", "Value": b"{"}]) == [e]
    with pytest.raises(ValueError):
        snapshots.parse_keep("0")


def test_host_ssh_settings_win_over_global():
    state = {
        "ssh": {"user": "root", "port": 22, "identity_file": "~/.ssh/k", "known_hosts": "/kh"},
        "host_ssh": {"10.0.0.6": {"user": "pi", "port": 2222}},
        "nodes": {"10.0.0.5": "n1", "10.0.0.6": "n2"},
    }
    pi = remote.host_ssh("10.0.0.6", state)
    assert (pi.user, pi.port) == ("pi", 2222) and pi.identity_file.endswith("/.ssh/k")
    assert pi.argv()[-1] == "pi@10.0.0.6" and "-p" in pi.argv()
    assert remote.host_ssh("10.0.0.5", state).user == "root"
    assert remote.node_address("n2", state) == "10.0.0.6" and remote.node_address("zz", state) is None


@given(st.one_of(st.none(), st.binary(max_size=64), st.text(max_size=64)))
def test_any_drain_mark_parses(value):
    mark = drain.parse_mark(value)
    assert isinstance(mark, dict)
    assert drain.maintenance_reason(mark).startswith(drain.REASON_PREFIX)


def test_drain_mark_body():
    assert json.loads(drain.mark_body("disk", "me@h", now=5.0)) == {"by": "me@h", "reason": "disk", "since": 5.0}


def test_upgrade_order_followers_then_leader_then_clients():
    from foundation_cli.core import upgrade

    raft = {"Servers": [{"Node": "s2", "Leader": True}, {"Node": "s3"}, {"Node": "s1"}]}
    nodes = [{"Node": n, "Address": f"10.0.0.{i}"} for i, n in enumerate(["c2", "s1", "s2", "s3", "c1"])]
    steps = upgrade.plan_order(raft, nodes)
    assert [(s.node, s.role) for s in steps] == [
        ("s1", "follower"),
        ("s3", "follower"),
        ("s2", "leader"),
        ("c1", "client"),
        ("c2", "client"),
    ]
    assert steps[0].address == "10.0.0.1"


def test_upgrade_refuses_without_tolerance_unless_forced():
    from foundation_cli.core import upgrade
    from foundation_cli.errors import ConflictError

    with pytest.raises(ConflictError, match="failure tolerance is 0"):
        upgrade.check_tolerance({"Healthy": True, "FailureTolerance": 0}, force=False)
    with pytest.raises(ConflictError, match="not healthy"):
        upgrade.check_tolerance({"Healthy": False, "FailureTolerance": 1}, force=False)
    assert upgrade.check_tolerance({"Healthy": False, "FailureTolerance": 0}, force=True) == 0
    assert upgrade.check_tolerance({"Healthy": True, "FailureTolerance": 1}, force=False) == 1
    assert not upgrade.recovered({"Healthy": True, "FailureTolerance": 0}, tolerance_before=1)
    assert upgrade.recovered({"Healthy": True, "FailureTolerance": 1}, tolerance_before=1)


def test_optimizer_news_between_rounds():
    from foundation_cli.core import envelope, optimizer_announce

    def rep(*recs):
        return {"recommendations": [{"id": i, "severity": s, "title": t, "applies": "live"} for i, s, t in recs]}

    first = optimizer_announce.diff(None, rep(("a", "warning", "A")))
    assert [f["id"] for f in first["new"]] == ["a"] and optimizer_announce.has_news(first)
    same = optimizer_announce.diff(rep(("a", "warning", "A")), rep(("a", "warning", "A")))
    assert not optimizer_announce.has_news(same) and optimizer_announce.summary(same) == "no change"
    moved = optimizer_announce.diff(rep(("a", "warning", "A"), ("b", "info", "B")), rep(("a", "critical", "A")))
    assert [f["id"] for f in moved["changed"]] == ["a"] and moved["resolved"] == ["b"]
    assert optimizer_announce.summary(moved) == "1 changed (critical a), 1 resolved"
    body = json.loads(optimizer_announce.message(moved, {"critical": 1}))
    assert body["kind"] == "optimizer" and body["counts"] == {"critical": 1}
    assert envelope.validate_channel("_optimizer") == "_optimizer"


def test_lock_delay_findings_apply_at_the_next_session():
    from foundation_cli.core.rules import base

    assert "next-session" in base.APPLIES


def test_up_plans_labels_as_node_meta_and_keeps_per_host_ssh(tmp_path, monkeypatch):
    """plan(): a host's labels reach its Consul config; record(): its own SSH settings reach the state."""
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    from foundation_cli import cluster_state
    from foundation_cli.core.orchestrator import record

    run = planned_run(
        "hosts:\n  - address: a\n    user: pi\n    port: 2222\n    labels: {usb: zigbee}\n"
        "  - b\n  - address: c\n    identity_file: ~/.ssh/c_key\nssh:\n  user: root\n"
    )
    assert run.plans["a"].consul_config["node_meta"]["usb"] == "zigbee"
    assert "usb" not in run.plans["b"].consul_config["node_meta"]
    run.http_addrs = ["http://10.0.0.1:8500"]
    record(run)
    saved = cluster_state.load()
    assert saved["host_ssh"] == {"a": {"user": "pi", "port": 2222}, "c": {"identity_file": "~/.ssh/c_key"}}
    assert saved["ssh"]["user"] == "root"
    assert remote.host_ssh("a", saved).argv()[-3:] == ["-p", "2222", "pi@a"]


def test_upgrade_refuses_a_binary_for_another_architecture():
    from foundation_cli.errors import FoundationError
    from foundation_cli.facades.upgrade import Upgrader
    from foundation_cli.tools.ssh import ExecResult

    class Conn:  # answers `uname -m` like an arm64 host
        label = "pi"

        def run(self, command, **_kw):
            return ExecResult(0, "aarch64\n", "")

    x86 = b"\x7fELF\x02\x01\x01" + b"\0" * 11 + b"\x3e\x00"  # ELF64, e_machine 62 (x86-64)
    with pytest.raises(FoundationError, match="the host is aarch64"):
        Upgrader(client=None)._binary(Conn(), x86)
