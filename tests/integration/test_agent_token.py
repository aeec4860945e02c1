"""A node agent whose ACL token Consul does not know yet (real Consul 1.8.7 with ACLs, default deny).

On a new cluster `up` starts each server's agent before the ACL step has made the agent's token, so
its first ``GET /v1/agent/self`` answers 403 "ACL not found" (agent/runner.token_not_made_yet). The
agent polls at short steps for a while, says once when the token stays unknown, goes on retrying,
and starts as soon as the token exists.
"""

from __future__ import annotations

import json

import pytest

from foundation_cli.core import acl
from foundation_cli.raw.recorder import Recorder
from foundation_cli.settings import Settings
from foundation_cli.tools import consul as consul_tool
from tests.integration.test_placement_support import start_local_agent, stop_process, wait_for
from tests.lab.consul import http_get

pytestmark = pytest.mark.timeout(90)


def test_an_unknown_token_is_said_once_and_the_agent_starts_when_the_token_is_made(consul_agent_acl, tmp_path):
    consul = consul_agent_acl
    status, body = http_get(f"{consul.http_addr}/v1/agent/self", token=consul.token)
    assert status == 200, body
    node = json.loads(body)["Config"]["NodeName"]
    token = acl.new_secret()
    token_file = tmp_path / "agent.token"
    token_file.write_text(token + "\n")
    log = tmp_path / "agent.log"
    proc = start_local_agent(
        consul.http_addr,
        tmp_path / "data",
        log,
        CONSUL_HTTP_TOKEN_FILE=str(token_file),
        FOUNDATION_AGENT_TOKEN_WAIT="1",  # the short steps end after 1 s here (40 s by default)
        FOUNDATION_AGENT_TASKS="none",  # the start is what is under test, not the tasks
    )
    try:
        wait_for(lambda: "still failing after" in log.read_text(), 30, "the agent saying its token is unknown")
        text = log.read_text()
        assert "403: ACL not found" in text, text  # Consul's reason, as the gateway now keeps it
        assert f"Consul does not know the agent's ACL token ({token_file})" in text, text
        assert proc.poll() is None, text  # still retrying (backed off), as before: not ended
        client = consul_tool.connect(Settings(consul_addr=consul.http_addr, token=consul.token), recorder=Recorder())
        acl.ensure_node(
            client, consul.token, node=node, datacenter="dc1", tokens=acl.NodeTokens(acl.new_secret(), token)
        )
        wait_for(lambda: "registered service" in log.read_text(), 30, "the agent registered once its token exists")
        text = log.read_text()
        assert "reading /v1/agent/self succeeded" in text and text.count("still failing after") == 1, text
    finally:
        stop_process(proc)
