"""foundation.yaml: modes, resolution, and one-line errors that name the place."""

from __future__ import annotations

import pytest

from foundation_cli.core import cluster_config as cc
from foundation_cli.errors import ConfigError


def err(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        cc.parse(text)
    assert "\n" not in info.value.message
    return info.value.message


def test_no_file_is_mortal(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    cfg = cc.load(cwd=str(tmp_path))
    assert cfg.mode == "mortal" and cfg.hosts == [] and cfg.server_count == 1
    assert cfg.strategy == "mdns"


def test_apprentice_defaults():
    cfg = cc.parse("hosts: [a, b, {address: c, user: pi, port: 2222}]\nssh: {user: root}\n")
    assert cfg.mode == "apprentice"
    assert [h.address for h in cfg.hosts] == ["a", "b", "c"]
    assert cfg.hosts[2].user == "pi" and cfg.hosts[2].port == 2222
    assert cfg.server_count == 3 and cfg.datacenter == "dc1" and cfg.strategy == "static"
    assert cc.parse("hosts: [a, b]").server_count == 1


def test_wizard_detected_and_raw_consul_merged():
    cfg = cc.parse("hosts: [{address: a, role: server, node_name: n1}]\nconsul: {performance: {raft_multiplier: 1}}\n")
    assert cfg.mode == "wizard"
    merged = cc.merge_consul({"performance": {"x": 2}, "server": True}, cfg.consul)
    assert merged == {"performance": {"x": 2, "raft_multiplier": 1}, "server": True}


def test_servers_must_be_odd_with_location():
    assert err("hosts: [a, b, c]\nservers: 2\n") == "foundation.yaml:2:10: servers must be an odd number ≥ 1, got 2"


def test_unknown_key_suggests():
    msg = err("hosts: [a]\nserver: 1\n")
    assert msg.startswith("foundation.yaml:2:1: unknown key 'server'") and "servers" in msg


def test_wrong_types():
    assert err("hosts: a\n") == "foundation.yaml:1:8: hosts must be a list of names or addresses, got a string ('a')"
    assert "ssh.port must be a whole number" in err("hosts: [a]\nssh: {port: abc}\n")
    assert err("hosts: [{address: a, port: 70000}]").startswith("foundation.yaml:1:28: host port must be between")
    assert "unknown key 'colour' in a host entry" in err("hosts: [{address: a, colour: red}]")


def test_invalid_yaml_has_location():
    msg = err("hosts: [a, b\nservers: 1\n")
    assert msg.startswith("foundation.yaml:") and "invalid YAML" in msg


def test_explicit_mode_conflicts_with_wizard_keys():
    assert "uses wizard settings" in err("mode: apprentice\nports: {http: 8600}\n")


def test_starters_parse_to_their_mode():
    for mode in cc.MODES:
        assert cc.parse(cc.starter(mode)).mode == mode


def test_find_file_order(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    (tmp_path / "xdg" / "foundation").mkdir(parents=True)
    (tmp_path / "xdg" / "foundation" / "foundation.yaml").write_text("hosts: [x]\n")
    assert cc.load(cwd=str(tmp_path)).hosts[0].address == "x"
    (tmp_path / "foundation.yaml").write_text("hosts: [y]\n")
    assert cc.load(cwd=str(tmp_path)).hosts[0].address == "y"
    with pytest.raises(ConfigError, match="no such file"):
        cc.load(str(tmp_path / "nope.yaml"))
