"""core/upgrade.raft_leader: the one reading of the Raft leader, for `upgrade` and `up`'s secure migration."""

from __future__ import annotations

from types import SimpleNamespace

from foundation_cli.core import upgrade
from tests.unit.up_runs import planned_run

# /v1/operator/raft/configuration as Consul 1.8 answers it (trimmed).
RAFT = {
    "Servers": [
        {"ID": "1", "Node": "s1", "Address": "10.0.0.1:8300", "Leader": False, "Voter": True},
        {"ID": "2", "Node": "s2", "Address": "10.0.0.2:8300", "Leader": True, "Voter": True},
        {"ID": "3", "Node": "s3", "Address": "10.0.0.3:8300", "Leader": False, "Voter": True},
    ],
    "Index": 7,
}


def test_the_leader_is_named_by_node_and_host():
    assert upgrade.raft_leader(RAFT) == upgrade.RaftLeader(node="s2", host="10.0.0.2")
    assert upgrade.raft_leader({"Servers": [{**s, "Leader": False} for s in RAFT["Servers"]]}) is None
    assert upgrade.raft_leader({}) is None and upgrade.raft_leader({"Servers": None}) is None
    assert upgrade.raft_leader({"Servers": [{"Leader": True}]}) == upgrade.RaftLeader(node=None, host="")


def test_upgrade_and_the_secure_migration_both_restart_that_leader_last(tmp_path, monkeypatch):
    from foundation_cli.core import secure_migration

    catalog = [{"Node": f"s{i}", "Address": f"10.0.0.{i}"} for i in (1, 2, 3)]
    assert [s.node for s in upgrade.plan_order(RAFT, catalog)] == ["s1", "s3", "s2"]

    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    run = planned_run("hosts: [a, b, c]\n")
    answer = SimpleNamespace(operator=SimpleNamespace(raft_config=lambda: RAFT))
    monkeypatch.setattr(secure_migration, "_client", lambda *_a: answer)
    assert [h.address for h in secure_migration.order(run, run.hosts)] == ["a", "c", "b"]
