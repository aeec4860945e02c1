"""A service command that keeps exiting is reported at once, with its exit status and last output.

Real Consul, a real node agent process: `start-singleton`, `start-replicated` and
`restart` return exit 1 as soon as the agent has seen the command fail twice,
quoting what the command printed (control characters escaped), instead of
waiting out --timeout.
"""

from __future__ import annotations

import pytest

from tests.integration.test_placement_support import agent_passing, cli, start_local_agent, stop_process, wait_for

FAILING = [
    "python3",
    "-c",
    "import sys; print('starting'); print('usage: web [-h]\\x1b[2J'); "
    "print('web: error: unrecognized arguments: --bogus', file=sys.stderr); sys.exit(2)",
]


@pytest.fixture
def agent(fresh_consul, tmp_path):
    proc = start_local_agent(fresh_consul.http_addr, tmp_path / "data", tmp_path / "agent.log")
    try:
        wait_for(lambda: agent_passing(fresh_consul.http_addr), 20, "the agent to register")
        yield fresh_consul
    finally:
        stop_process(proc)


def _assert_crash_report(proc, name: str) -> None:
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.splitlines()
    assert lines[0].startswith(f"error: {name} keeps exiting on "), proc.stderr
    assert "exit status 2, 2 times in a row" in lines[0]
    assert "  | web: error: unrecognized arguments: --bogus" in lines
    assert "\x1b" not in proc.stderr  # the command's escape sequence is shown, not obeyed
    assert "\\x1b[2J" in proc.stderr
    assert lines[-1].startswith("hint: fix the command and `foundation restart")


@pytest.mark.timeout(120)
def test_start_singleton_reports_a_command_that_keeps_exiting(agent):
    env = agent.env
    proc = cli(["start-singleton", "web", "--timeout", "60s", "--", *FAILING], env, check=False)
    _assert_crash_report(proc, "web")
    # Nothing is half-done: the spec is stored (the user fixes the command and restarts it) and listed.
    listed = cli(["ps", "web", "--json"], env)
    assert '"web"' in listed.stdout
    again = cli(["restart", "web", "--timeout", "60s"], env, check=False)
    _assert_crash_report(again, "web")


@pytest.mark.timeout(120)
def test_start_replicated_reports_a_command_that_keeps_exiting(agent):
    proc = cli(["start-replicated", "rep", "--timeout", "60s", "--", *FAILING], agent.env, check=False)
    _assert_crash_report(proc, "rep")


@pytest.mark.timeout(120)
def test_restart_never_is_reported_after_one_failure(agent):
    proc = cli(
        ["start-singleton", "once", "--restart", "never", "--timeout", "60s", "--", *FAILING], agent.env, check=False
    )
    assert proc.returncode == 1, proc.stderr
    assert "exit status 2, once" in proc.stderr.splitlines()[0]
