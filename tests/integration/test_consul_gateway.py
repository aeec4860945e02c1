"""The Consul gateway (foundation_cli/tools/consul/) against real Consul.

What every caller relies on: errors arrive translated, the plan client sends
nothing, a dry run withholds writes, and when the address in use is
unreachable the other servers the state file lists are tried in order (each
attempt recorded, so ``--explain`` shows it). The lab test kills Consul on the
first server of a 3-server cluster: the CLI keeps working through the others.
"""

from __future__ import annotations

import json
import os

import pytest

from foundation_cli import cluster_state
from foundation_cli.errors import NotFoundError, UnreachableError
from foundation_cli.raw.address import ConsulAddress
from foundation_cli.raw.recorder import Recorder
from foundation_cli.settings import Settings, resolve
from foundation_cli.tools import consul as consul_tool
from tests.integration.test_placement_support import cli, wait_for

DEAD = "http://127.0.0.1:1"  # nothing listens on port 1: connection refused at once


@pytest.fixture
def state_file():
    """Write the state `foundation up` would write; removed afterwards."""
    written = []

    def write(addrs: list[str]) -> None:
        cluster_state.save({"consul_http_addr": addrs[0], "consul_http_addrs": addrs, "mode": "ssh"})
        written.append(True)

    try:
        yield write
    finally:
        cluster_state.state_path().unlink(missing_ok=True)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}


def test_typed_methods_round_trip_and_errors_are_translated(consul_agent):
    client = consul_tool.connect(Settings(consul_addr=consul_agent.http_addr), recorder=Recorder())
    assert client.kv.put("gw/a", "1") is True
    assert client.kv.cas("gw/a", "2", 0) is False  # exists: a check-and-set at index 0 loses
    _index, entry = client.kv.get("gw/a")
    assert entry["Value"] == b"1"
    sid = client.session.create({"Name": "gw", "Behavior": "release", "LockDelay": "0s"})
    assert client.kv.acquire("gw/lock", "x", sid) is True
    assert client.session.info(sid, consistency="consistent")[1]["ID"] == sid
    assert client.kv.release("gw/lock", "x", sid) is True
    assert client.session.destroy(sid) is True
    assert client.session.info(sid)[1] is None
    with pytest.raises(NotFoundError, match="PUT /v1/session/renew/"):
        client.session.renew(sid)
    assert client.status.leader()
    assert client.snapshot.restore(client.snapshot.save()) is True


def test_plan_client_records_and_sends_nothing(consul_agent):
    recorder = Recorder()
    plan = consul_tool.plan_client(ConsulAddress.parse(consul_agent.http_addr), recorder=recorder)
    sid = plan.session.create({"Name": "never"})
    assert plan.kv.acquire("gw/planned", "v", sid) is True
    assert [op.method for op in recorder.operations] == ["PUT", "PUT"]
    assert all(op.dry_run for op in recorder.operations)
    assert recorder.operations[1].url.endswith("/v1/kv/gw/planned?acquire=SESSION_ID")
    assert consul_agent.kv_get("gw/planned") is None


def test_dry_run_withholds_writes_but_reads(consul_agent):
    recorder = Recorder(dry_run=True)
    client = consul_tool.connect(Settings(consul_addr=consul_agent.http_addr), recorder=recorder)
    assert client.kv.put("gw/dry", "1") is True
    assert client.kv.get("gw/dry")[1] is None  # the read went to Consul: nothing was written
    assert [(op.method, op.dry_run) for op in recorder.operations] == [("PUT", True), ("GET", False)]


def test_fails_over_to_the_next_server_and_records_each_attempt(consul_agent):
    recorder = Recorder()
    settings = Settings(consul_addr=DEAD, fallback_addresses=(ConsulAddress.parse(consul_agent.http_addr),))
    client = consul_tool.connect(settings, recorder=recorder)
    assert client.kv.put("gw/over", "1") is True
    assert client.kv.get("gw/over")[1]["Value"] == b"1"
    first, second, third = recorder.operations
    assert first.url.startswith(DEAD) and first.error == "connection refused"
    assert second.url.startswith(consul_agent.http_addr) and second.status == 200
    assert third.url.startswith(consul_agent.http_addr)  # the server that answered is asked first now
    with pytest.raises(UnreachableError, match="cannot reach Consul at any server"):
        consul_tool.connect(
            Settings(consul_addr=DEAD, fallback_addresses=(ConsulAddress.parse("127.0.0.1:2"),)), recorder=Recorder()
        ).kv.get("gw/over")


def test_fallbacks_come_from_the_state_file_only_for_its_own_servers(consul_agent, state_file):
    state_file([DEAD, consul_agent.http_addr])
    assert resolve(env={}).fallback_addresses == (ConsulAddress.parse(consul_agent.http_addr),)
    # An address of some other cluster never fails over to this one's servers.
    assert resolve(env={"CONSUL_HTTP_ADDR": "http://127.0.0.1:3"}).fallback_addresses == ()
    out = cli(["kv", "put", "gw/cli", "v", "--explain"], _env())
    assert f"{DEAD}/v1/kv/" in out.stderr and "connection refused" in out.stderr
    assert cli(["kv", "get", "gw/cli"], _env()).stdout.strip() == "v"


def test_agents_never_fail_over():
    from foundation_cli.agent.context import AgentContext

    settings = Settings(consul_addr=DEAD, fallback_addresses=(ConsulAddress.parse("127.0.0.1:2"),))
    ctx = AgentContext.__new__(AgentContext)
    ctx.settings, ctx.recorder = settings, Recorder()
    assert ctx.consul().http.fallbacks == []


@pytest.mark.lab
@pytest.mark.timeout(180)
def test_cli_keeps_working_when_the_first_server_dies(consul_cluster, state_file):
    state_file(consul_cluster.http_addrs)
    env = _env()
    cli(["kv", "put", "gw/before", "1"], env)
    consul_cluster.hosts[0].crash()  # consul (and anything else) on the first server killed
    wait_for(lambda: cli(["kv", "put", "gw/after", "2"], env, check=False).returncode == 0, 60, "a write")
    assert cli(["kv", "get", "gw/before"], env).stdout.strip() == "1"
    assert cli(["kv", "get", "gw/after"], env).stdout.strip() == "2"
    assert json.loads(cli(["ps", "--json"], env).stdout) == []
    shown = cli(["kv", "get", "gw/after", "--explain"], env).stderr
    assert consul_cluster.http_addrs[0] in shown and consul_cluster.http_addrs[1] in shown
