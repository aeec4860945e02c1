"""The Consul gateway's pure parts: the address value, error translation, the plan client (sends nothing)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from foundation_cli.core.service_spec import ServiceSpec
from foundation_cli.core.timing import Timing
from foundation_cli.errors import ConflictError, NotFoundError, PermissionDeniedError, UnreachableError, UsageError
from foundation_cli.raw.address import DEFAULT_CONSUL_ADDRESS, AddressError, ConsulAddress
from foundation_cli.raw.recorder import Recorder
from foundation_cli.tools import consul as consul_tool
from foundation_cli.tools.consul.gateway import Response, raise_for_status


@pytest.mark.parametrize(
    ("text", "url", "bare"),
    [
        ("127.0.0.1:8500", "http://127.0.0.1:8500", "127.0.0.1"),
        ("[::1]:8600", "http://[::1]:8600", "::1"),
        ("https://consul.example", "https://consul.example:8501", "consul.example"),
    ],
)
def test_address_is_parsed_once_into_one_value(text, url, bare):
    address = ConsulAddress.parse(text)
    assert address.url == url and str(address) == url and address.bare_host == bare
    assert ConsulAddress.parse(address.url) == address


def test_one_default_and_bad_addresses():
    assert DEFAULT_CONSUL_ADDRESS.url == "http://127.0.0.1:8500"
    with pytest.raises(AddressError):
        ConsulAddress.parse("unix:///tmp/consul.sock")


@pytest.mark.parametrize(
    ("code", "body", "error"),
    [
        (400, "Request decode failed", UsageError),
        (403, "Permission denied", PermissionDeniedError),
        (404, "", NotFoundError),
        (409, "conflict", ConflictError),
        (500, "No cluster leader", UnreachableError),
    ],
)
def test_http_errors_become_foundation_errors_naming_the_request(code, body, error):
    with pytest.raises(error) as info:
        raise_for_status("PUT", "/v1/kv/a", Response(code, {}, body), allow_404=False)
    assert code == 500 or "PUT /v1/kv/a" in info.value.message


def test_plan_client_records_without_sending():
    recorder = Recorder()
    client = consul_tool.plan_client(ConsulAddress.parse("192.0.2.1:8500"), recorder=recorder)  # TEST-NET: no route
    assert client.session.create({"Name": "x"}) == consul_tool.PLAN_SESSION
    assert client.kv.acquire("foundation/locks/web", "{}", consul_tool.PLAN_SESSION) is True
    assert all(op.dry_run and op.status is None for op in recorder.operations)


def test_explain_shows_the_session_the_agent_creates():
    """start-singleton --explain and the agent build the same request through the same gateway method."""
    from foundation_cli.agent.session import NodeSession
    from foundation_cli.facades.process_manager import agent_side_operations

    address = ConsulAddress.parse("192.0.2.1:8500")
    spec = ServiceSpec(name="web", mode="singleton", command=["sleep", "60"])
    shown = [op for _why, op in agent_side_operations(spec, address)]
    recorder = Recorder()
    ctx = SimpleNamespace(node="NODE", logger=logging.getLogger("test"))
    noop = lambda *a: None  # noqa: E731
    NodeSession(ctx, Timing(), on_fence=noop, on_lost=noop, on_confirmed=noop).create(
        consul_tool.plan_client(address, recorder=recorder)
    )
    sent = recorder.operations[0]
    assert (sent.method, sent.url, sent.body) == (shown[0].method, shown[0].url, shown[0].body)
    assert [op.url.split("?")[0].removeprefix(address.url) for op in shown] == [
        "/v1/session/create",
        "/v1/kv/foundation/locks/web",
        "/v1/session/info/SESSION_ID",
        "/v1/agent/service/register",
        "/v1/kv/foundation/status/web/NODE",
    ]


def test_a_write_whose_answer_was_lost_with_the_leader_says_it_may_have_landed():
    with pytest.raises(UnreachableError) as write:
        raise_for_status("PUT", "/v1/kv/foundation/config/k", Response(500, {}, b"rpc error making call: EOF"))
    assert "may or may not have been applied" in write.value.message and "again" in (write.value.hint or "")
    with pytest.raises(UnreachableError) as read:
        raise_for_status("GET", "/v1/kv/foundation/config/k", Response(500, {}, b"rpc error making call: EOF"))
    assert "no cluster leader" in read.value.message
