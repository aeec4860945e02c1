"""core/acl.py against a real Consul with ACLs: bootstrap, refusal, node policy and tokens, the local reset."""

from __future__ import annotations

import json

import pytest

from foundation_cli.core import acl
from foundation_cli.raw.recorder import Recorder
from foundation_cli.settings import Settings
from foundation_cli.tools import consul as consul_tool
from tests.lab.consul import http_get, start_agent

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def agent():
    a = start_agent(acl=True)
    try:
        yield a
    finally:
        a.close()


def _client(agent, token=None):
    return consul_tool.connect(Settings(consul_addr=agent.http_addr, token=token), recorder=Recorder())


def test_a_cluster_bootstrapped_by_someone_else_is_refused_with_how_and_a_known_token_is_reused(agent):
    """This agent's ACLs have a master token in its config (someone else's bootstrap)."""
    client = _client(agent)
    with pytest.raises(acl.BootstrapRefused) as refused:
        acl.bootstrap(client, known=None, timeout=5)
    assert refused.value.reset_index and refused.value.reset_index.isdigit()
    assert "acl-bootstrap-reset" in refused.value.hint and "--token" in refused.value.hint
    assert acl.bootstrap(client, known=agent.token, timeout=5) == (agent.token, False)
    # A token Consul does not know ("ACL not found") is not reused: bootstrap is tried (refused here).
    with pytest.raises(acl.BootstrapRefused):
        acl.bootstrap(client, known="00000000-0000-0000-0000-000000000001", timeout=5)


def test_node_policy_and_tokens_are_made_once_and_narrow(agent):
    client = _client(agent)
    tokens = acl.NodeTokens(consul=acl.new_secret(), agent=acl.new_secret())
    assert acl.ensure_node(client, agent.token, node="n1", datacenter="dc1", tokens=tokens) is True
    assert acl.ensure_node(client, agent.token, node="n1", datacenter="dc1", tokens=tokens) is False
    assert acl.token_valid(client, tokens.agent) and acl.token_valid(client, tokens.consul)

    def put(token, key):
        import urllib.error
        import urllib.request

        req = urllib.request.Request(
            f"{agent.http_addr}/v1/kv/{key}", data=b"x", method="PUT", headers={"X-Consul-Token": token}
        )
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code

    assert put(tokens.agent, "foundation/services/evil") == 403
    assert put(tokens.agent, "foundation/config/x") == 403
    assert put(tokens.agent, "foundation/locks/svc") == 200
    assert put(tokens.agent, "foundation/config-status/n1") == 200
    assert put(tokens.agent, "foundation/config-status/n2") == 403
    assert put(tokens.consul, "foundation/locks/svc") == 403
    status, _ = http_get(f"{agent.http_addr}/v1/acl/tokens", token=tokens.agent)
    assert status == 403
    # The policy follows the code: changed rules are written back.
    status, body = http_get(f"{agent.http_addr}/v1/acl/policy/name/foundation-agent-n1", token=agent.token)
    assert status == 200 and json.loads(body)["Rules"] == acl.agent_rules("n1")


def test_up_local_rebootstraps_its_own_cluster_when_the_state_lost_the_token(tmp_path):
    from tests.integration.test_local_cluster import LocalEnv

    local = LocalEnv(tmp_path)
    try:
        assert local.run("up", "--local", "--http-port", str(local.port)).returncode == 0
        state_file = tmp_path / "state" / "state.json"
        state = json.loads(state_file.read_text())
        old = state.pop("token")
        state_file.write_text(json.dumps(state))
        again = local.run("up", "--local", "--http-port", str(local.port), "--json")
        assert again.returncode == 0, again.stderr
        assert "ACLs re-bootstrapped" in again.stdout + again.stderr
        new = json.loads(state_file.read_text())["token"]
        assert new and new != old
        assert local.run("kv", "put", "k", "v").returncode == 0
    finally:
        local.cleanup()
