"""A real node agent over its memory bound exits 75 to be restarted, after deregistering (real Consul)."""

from __future__ import annotations

import pytest

from foundation_cli.agent import memory_guard
from tests.integration.test_placement_support import agent_passing, start_local_agent, stop_process

pytestmark = pytest.mark.timeout(90)


def test_an_agent_over_its_bound_stops_with_the_restart_status(consul_agent, tmp_path) -> None:
    log = tmp_path / "agent.log"
    proc = start_local_agent(consul_agent.http_addr, tmp_path / "data", log, **{memory_guard.ENV: "1"})
    try:
        code = proc.wait(timeout=60)
    finally:
        stop_process(proc)
    text = log.read_text()
    assert code == memory_guard.EXIT_OVER_BOUND, text[-2000:]
    assert "over its bound of 1 MiB" in text and "deregistered" in text
    assert agent_passing(consul_agent.http_addr) == []
