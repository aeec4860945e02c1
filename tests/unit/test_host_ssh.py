"""core/host_ssh.py: one merge of a host's own SSH settings, used by `down` and by ssh/logs/exec."""

from __future__ import annotations

import os

import pytest

from foundation_cli import cluster_state
from foundation_cli.core import cluster_config as cc
from foundation_cli.core import host_ssh
from foundation_cli.errors import UnreachableError
from foundation_cli.facades import remote
from foundation_cli.tools import ssh
from tests.unit.up_runs import planned_run


def test_each_key_comes_from_the_first_layer_that_sets_it():
    yaml_entry = {"user": "pi", "port": None, "identity_file": "", "proxy_jump": None}
    state_kept = {"port": 2222, "proxy_jump": "admin@bastion", "identity_file": "~/.ssh/pi"}
    defaults = {"user": "root", "port": 22, "identity_file": "~/.ssh/id", "proxy_jump": "other@jump"}
    merged = host_ssh.merge(yaml_entry, state_kept, defaults)
    assert merged == host_ssh.HostSSH(
        user="pi", port=2222, identity_file=os.path.expanduser("~/.ssh/pi"), proxy_jump="admin@bastion"
    )
    assert host_ssh.merge(None, {}, defaults).proxy_jump == "other@jump"
    assert host_ssh.merge() == host_ssh.HostSSH()


def test_own_is_what_a_hosts_entry_sets_and_kept_reads_the_state():
    cfg = cc.parse("hosts:\n  - {address: a, port: 2222, proxy_jump: root@b}\n  - b\n")
    assert [host_ssh.own(h) for h in cfg.hosts] == [{"port": 2222, "proxy_jump": "root@b"}, {}]
    state = {"host_ssh": {"a": {"user": "pi"}}}
    assert host_ssh.kept(state, "a") == {"user": "pi"} and host_ssh.kept(state, "z") == {} == host_ssh.kept({}, "a")


def test_the_facade_merges_the_kept_settings_over_the_global_ones():
    state = {"ssh": {"user": "root", "proxy_jump": "j@gw"}, "host_ssh": {"h": {"proxy_jump": "a@b", "port": 2}}}
    assert (remote.host_ssh("h", state).proxy_jump, remote.host_ssh("h", state).user) == ("a@b", "root")
    assert (remote.host_ssh("g", state).proxy_jump, remote.host_ssh("g", state).port) == ("j@gw", None)


@pytest.fixture
def targets(monkeypatch):
    """Every SSH target `down` resolves, by alias; the connection itself is refused (nothing leaves)."""
    seen: dict[str, ssh.Target] = {}

    def refuse(self):
        seen[self.target.alias] = self.target
        raise UnreachableError(f"{self.target.alias}: not in this test")

    monkeypatch.setattr(ssh.Connection, "connect", refuse)
    return seen


def test_down_reaches_a_host_gone_from_the_config_through_the_bastion_up_used(tmp_path, monkeypatch, targets):
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    from foundation_cli.core.orchestrator import down

    cluster_state.save(
        {
            "hosts": ["10.0.0.1", "10.0.1.7"],
            "host_ssh": {"10.0.1.7": {"port": 2222, "proxy_jump": "root@10.0.0.1", "user": "pi"}},
        }
    )
    cfg = cc.parse(f"hosts: [10.0.0.1]\nssh:\n  user: root\n  config_file: {tmp_path / 'none'}\n")
    results = down(cfg)
    assert all(r.error for r in results)
    gone = targets["10.0.1.7"]
    assert (gone.proxy_jump, gone.port, gone.user) == ("root@10.0.0.1", 2222, "pi")
    assert targets["10.0.0.1"].proxy_jump is None and targets["10.0.0.1"].user == "root"
    assert cluster_state.load()["hosts"] == ["10.0.0.1", "10.0.1.7"]  # a failed down forgets nothing


def test_up_keeps_the_settings_of_hosts_gone_from_the_config_and_replaces_the_listed_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    from foundation_cli.core.orchestrator import record

    cluster_state.save(
        {
            "hosts": ["a", "b", "gone"],
            "host_ssh": {"gone": {"proxy_jump": "root@a"}, "b": {"proxy_jump": "root@old-bastion"}},
        }
    )
    # b is reached directly now
    run = planned_run("hosts:\n  - {address: a, user: pi}\n  - b\n", state=cluster_state.load())
    run.http_addrs = ["http://10.0.0.1:8500"]
    record(run)
    assert cluster_state.load()["host_ssh"] == {"gone": {"proxy_jump": "root@a"}, "a": {"user": "pi"}}
