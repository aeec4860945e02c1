"""What a host says about itself is untrusted: its existing node_name, gossip key and tokens (issue 12)."""

from __future__ import annotations

import json

import pytest

from foundation_cli.core import bootstrap
from foundation_cli.core import cluster_config as cc
from foundation_cli.core.bootstrap import Probe
from foundation_cli.core.orchestrator import UpRun, _unique_names
from foundation_cli.errors import FoundationError
from tests.unit.up_runs import planned_run

INJECTED = "node-1\nExecStartPre=/bin/touch /tmp/pwned"


def probe(hostname: str, addr: str, config: dict | None = None) -> Probe:
    return Probe(hostname=hostname, addr=addr, config=json.dumps(config) if config else None)


@pytest.mark.parametrize("bad", [INJECTED, "a b", "-x", "x" * 64, "nöde", "", "a\x00b", 7])
def test_an_invalid_existing_node_name_is_ignored_with_a_warning(bad):
    cfg = cc.parse("hosts: [a, b]")
    probes = {"a": probe("pi", "10.0.0.1", {"node_name": bad}), "b": probe("kept", "10.0.0.2", {"node_name": "kept"})}
    warnings: list[tuple[str, str]] = []
    names = _unique_names(cfg.hosts, probes, warn=lambda addr, text: warnings.append((addr, text)))
    assert names == {"a": "pi", "b": "kept"}
    assert all(bootstrap.valid_node_name(n) for n in names.values())
    if bad not in ("",):
        assert [addr for addr, _ in warnings] == ["a"] and "not a DNS label" in warnings[0][1]
        assert "\n" not in warnings[0][1]


def test_the_unit_file_refuses_a_newline_in_any_value():
    with pytest.raises(FoundationError, match="control character"):
        bootstrap._unit("agent", ["/opt/foundation/agent/run"], {"FOUNDATION_NODE": INJECTED})
    with pytest.raises(FoundationError, match="control character"):
        bootstrap._unit("agent", ["/opt/x\nExecStartPre=/bin/true"], {})
    with pytest.raises(FoundationError, match="variable name"):
        bootstrap._unit("agent", ["/bin/true"], {"A=B\nX": "1"})
    unit = bootstrap._unit("agent", ["/opt/a b/$HOME%i"], {"K": 'v "q" \\ %h $X'})
    assert 'Environment="K=v \\"q\\" \\\\ %%h $X"' in unit
    assert "ExecStart='/opt/a b/$$HOME%%i'" in unit
    assert sum(line.startswith("Exec") for line in unit.splitlines()) == 1


def _plan(tmp_path, monkeypatch, yaml: str, probes: dict[str, Probe]) -> UpRun:
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    return planned_run(yaml, probes=probes)


HOSTILE_KEY = "aG9zdGlsZS1rZXktaG9zdGlsZS1rZXktaG9zdGlsZSE="


def test_a_hosts_gossip_key_is_not_adopted_silently(tmp_path, monkeypatch):
    probes = {"a": probe("a", "10.0.0.1"), "b": probe("b", "10.0.0.2", {"encrypt": HOSTILE_KEY})}
    with pytest.raises(FoundationError) as err:
        _plan(tmp_path, monkeypatch, "hosts: [a, b]", probes)
    assert "refusing to make it the whole cluster's key" in err.value.message and "b" in err.value.message
    assert HOSTILE_KEY not in err.value.message + (err.value.hint or "")
    assert "consul: {encrypt: KEY}" in (err.value.hint or "")


def test_the_operator_adopts_a_hosts_key_explicitly(tmp_path, monkeypatch):
    probes = {"a": probe("a", "10.0.0.1"), "b": probe("b", "10.0.0.2", {"encrypt": HOSTILE_KEY})}
    run = _plan(tmp_path, monkeypatch, f"hosts: [a, b]\nconsul: {{encrypt: '{HOSTILE_KEY}'}}\n", probes)
    assert run.gossip == HOSTILE_KEY


def test_the_key_this_machine_made_wins_over_the_hosts(tmp_path, monkeypatch):
    (tmp_path / "gossip.key").write_text("bG9jYWwta2V5LWxvY2FsLWtleS1sb2NhbC1rZXkhIQ==\n")
    probes = {"a": probe("a", "10.0.0.1", {"encrypt": HOSTILE_KEY})}
    run = _plan(tmp_path, monkeypatch, "hosts: [a]", probes)
    assert run.gossip == "bG9jYWwta2V5LWxvY2FsLWtleS1sb2NhbC1rZXkhIQ=="


def test_the_config_diff_never_shows_the_hosts_old_tokens():
    old = json.dumps(
        {"acl": {"tokens": {"agent": "OLD-agent-7e1c", "default": "OLD-default-99"}}, "encrypt": "OLDKEY==", "x": 1},
        indent=2,
    )
    new = bootstrap.render_config({"acl": {"tokens": {"agent": "NEW-agent-1234"}}, "encrypt": "NEWKEY==", "x": 2})
    diff = bootstrap.redacted_diff(old, new, "/etc/foundation/consul.d/foundation.json")
    for secret in ("OLD-agent-7e1c", "OLD-default-99", "OLDKEY==", "NEW-agent-1234", "NEWKEY=="):
        assert secret not in diff
    assert '-  "x": 1' in diff and '+  "x": 2' in diff
    # Not JSON (a hand-written file): still masked by shape.
    diff = bootstrap.redacted_diff('acl { tokens { agent = "OLD-agent-7e1c" } }\n', new, "/f")
    assert "OLD-agent-7e1c" not in diff
    only_secrets = bootstrap.redacted_diff(
        bootstrap.render_config({"encrypt": "A-key-0001"}), bootstrap.render_config({"encrypt": "B-key-0002"}), "/f"
    )
    assert "only secret values changed" in only_secrets and "key-000" not in only_secrets
