"""Pure parts of core/acl.py: the node agent's policy and the agent config stanza."""

from __future__ import annotations

import re

from foundation_cli.core import acl, keys


def _rules(node: str) -> dict[tuple[str, str], str]:
    out = {}
    for line in acl.agent_rules(node).splitlines():
        m = re.match(r'(\w+) "([^"]*)" \{ policy = "(\w+)" \}', line)
        if m:
            out[(m.group(1), m.group(2))] = m.group(3)
    return out


def _key_policy(rules: dict, key: str) -> str:
    """Consul's longest-prefix match over key / key_prefix rules."""
    best, policy = -1, "deny"
    for (kind, prefix), pol in rules.items():
        if kind == "key" and key == prefix:
            return pol
        if kind == "key_prefix" and key.startswith(prefix) and len(prefix) > best:
            best, policy = len(prefix), pol
    return policy


def test_agent_cannot_write_specs_config_user_kv_or_the_cluster_record():
    rules = _rules("n1")
    for key in (keys.SERVICES + "evil", keys.CONFIG + "x", keys.USER_KV + "k", keys.CLUSTER, "other/x"):
        assert _key_policy(rules, key) in ("read", "deny"), key
    assert _key_policy(rules, keys.SERVICES + "evil") == "read"


def test_agent_writes_only_what_an_agent_writes():
    rules = _rules("n1")
    for key in (
        keys.LOCKS + "svc",
        keys.STATUS + "svc/n1",
        keys.CONFIG_STATUS + "n1",
        keys.CHANNELS + "c/blobs/1",
        keys.OPTIMIZER_LAST,
        keys.DISCOVERED + "198.18.0.9",
    ):
        assert _key_policy(rules, key) == "write", key
    assert _key_policy(rules, keys.CONFIG_STATUS + "n2") == "read"  # another node's status
    # Any node's sessions: destroying a dead holder's moves its singleton at once (a handover, never two copies).
    assert rules[("session_prefix", "")] == "write"
    assert rules[("node", "n1")] == "write"


def test_config_block_is_deny_by_default_with_persistence():
    block = acl.config_block(agent_token="t-123456")
    assert block == {
        "enabled": True,
        "default_policy": "deny",
        "enable_token_persistence": True,
        "tokens": {"agent": "t-123456"},
    }


def test_node_tokens_kept_from_state_else_new():
    kept = acl.node_tokens({"n1": {"consul": "c-secret", "agent": "a-secret"}}, "n1")
    assert (kept.consul, kept.agent) == ("c-secret", "a-secret")
    fresh = acl.node_tokens({"n1": {"consul": 3}}, "n1")
    assert fresh.consul != fresh.agent and len(fresh.consul) == 36


def test_bootstrap_rides_through_a_server_whose_api_is_not_listening_yet(monkeypatch):
    """A server just started by `up`: connection refused for a moment, then the bootstrap answers."""
    from types import SimpleNamespace

    from foundation_cli.errors import UnreachableError

    monkeypatch.setattr(acl.time, "sleep", lambda _s: None)
    answers = [
        UnreachableError("cannot reach Consul at https://198.18.0.2:8501: connection refused"),
        UnreachableError("cannot reach Consul at https://198.18.0.2:8501: connection refused"),
        SimpleNamespace(status=500, body="The ACL system is currently in legacy mode."),
        SimpleNamespace(status=200, body={"SecretID": "11111111-2222-3333-4444-555555555555"}),
    ]

    def bootstrap():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    client = SimpleNamespace(acl=SimpleNamespace(bootstrap=bootstrap))
    assert acl.bootstrap(client, known=None, timeout=30) == ("11111111-2222-3333-4444-555555555555", True)
    assert answers == []
