"""agent/context.retrying: a token Consul does not know yet, or a local Consul still starting, is polled at
short steps, for a while only."""

from __future__ import annotations

import logging

from foundation_cli.agent.context import retrying
from foundation_cli.agent.runner import consul_not_joined, consul_starting, token_not_made_yet
from foundation_cli.core.retry import backoff
from foundation_cli.errors import PermissionDeniedError, UnreachableError

UNKNOWN = PermissionDeniedError("Consul refused GET /v1/agent/self: permission denied (403: ACL not found)")
NARROW = PermissionDeniedError("Consul refused GET /v1/agent/self: permission denied (403: Permission denied)")


class Clock:
    """A clock and a stop event in one: waiting moves the clock (no sleeping); set once past ``until``."""

    def __init__(self, until: float = 1e9) -> None:
        self.now, self.until, self.waits = 0.0, until, []

    def __call__(self) -> float:
        return self.now

    def is_set(self) -> bool:
        return self.now >= self.until

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return self.is_set()


def failing(times: int, exc: Exception):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= times:
            raise exc
        return {"Config": {"NodeName": "n1"}}

    return fn


def test_a_token_not_made_yet_is_polled_every_0_2_s_until_it_works(caplog, monkeypatch):
    monkeypatch.delenv("FOUNDATION_AGENT_TOKEN_WAIT", raising=False)
    clock = Clock()
    log = logging.getLogger("test.agent")
    with caplog.at_level(logging.INFO, logger="test.agent"):
        me = retrying(
            failing(12, UNKNOWN), clock, log, "reading /v1/agent/self", soon=token_not_made_yet(), clock=clock
        )
    assert me == {"Config": {"NodeName": "n1"}}
    assert clock.waits == [0.2] * 12  # was 0.25, 0.5, 1, 2, 4, 5 …: the agent started up to 4 s after its token
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and "403: ACL not found" in lines[0] and "succeeded 2.4 s after" in lines[1], lines


def test_a_token_that_stays_unknown_is_said_once_then_backed_off_as_before(caplog, monkeypatch):
    monkeypatch.setenv("CONSUL_HTTP_TOKEN_FILE", "/etc/foundation/agent.token")
    monkeypatch.delenv("FOUNDATION_AGENT_TOKEN_WAIT", raising=False)
    clock = Clock(until=150)
    log = logging.getLogger("test.agent")
    with caplog.at_level(logging.INFO, logger="test.agent"):
        got = retrying(
            failing(10**6, UNKNOWN), clock, log, "reading /v1/agent/self", soon=token_not_made_yet(), clock=clock
        )
    assert got is None  # stopped, never succeeded
    fast = [w for w in clock.waits if w == 0.2]
    assert clock.waits[: len(fast)] == fast and 39.9 < sum(fast) < 40.3  # 40 s of short steps, no more
    rest = clock.waits[len(fast) :]
    assert rest == [backoff(i) for i in range(len(rest))]  # then the usual backoff
    assert max(clock.waits) == 5.0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, errors
    assert "still failing after 40 s (" in errors[0] and "ACL not found" in errors[0]
    assert "Consul does not know the agent's ACL token (/etc/foundation/agent.token)" in errors[0]


def test_a_token_consul_knows_but_that_is_too_narrow_is_not_polled_fast(monkeypatch):
    monkeypatch.setenv("FOUNDATION_AGENT_TOKEN_WAIT", "30")
    clock = Clock()
    retrying(failing(4, NARROW), clock, logging.getLogger("test.agent"), "x", soon=token_not_made_yet(), clock=clock)
    assert clock.waits == [backoff(i) for i in range(4)]


def test_the_short_window_can_be_set_for_slow_clusters(monkeypatch):
    monkeypatch.setenv("FOUNDATION_AGENT_TOKEN_WAIT", "90")
    assert token_not_made_yet().window == 90.0
    monkeypatch.setenv("FOUNDATION_AGENT_TOKEN_WAIT", "soon")
    assert token_not_made_yet().window == 40.0


REFUSED = UnreachableError(
    "cannot reach Consul at http://127.0.0.1:8500: connection refused — is the agent running?", hint="…"
)


def sequence(*excs: Exception):
    """``fn`` raising each of ``excs`` in turn, then answering."""
    left = list(excs)

    def fn():
        if left:
            raise left.pop(0)
        return {"Config": {"NodeName": "n1"}}

    return fn


def test_a_consul_still_starting_is_polled_every_0_1_s_then_its_unknown_token_every_0_2_s():
    """up starts the agent right after its Consul, which listens only once it has its certificate; on
    a server the token comes later still. Each expected failure is polled at its own short step."""
    clock = Clock()
    soon = (token_not_made_yet(), consul_starting("http://127.0.0.1:8500"))
    me = retrying(sequence(*[REFUSED] * 8, *[UNKNOWN] * 3), clock, logging.getLogger("t"), "x", soon=soon, clock=clock)
    assert me == {"Config": {"NodeName": "n1"}}
    assert clock.waits == [0.1] * 8 + [0.2] * 3  # was 0.25, 0.5, 1, 2 …: registered up to a second late


def test_a_consul_that_never_listens_is_said_once_naming_its_service_then_backed_off(caplog):
    clock = Clock(until=200)
    with caplog.at_level(logging.INFO, logger="test.agent"):
        retrying(
            failing(10**6, REFUSED),
            clock,
            logging.getLogger("test.agent"),
            "reading /v1/agent/self",
            soon=consul_starting("http://127.0.0.1:8500"),
            clock=clock,
        )
    fast = [w for w in clock.waits if w == 0.1]
    assert clock.waits[: len(fast)] == fast and 59.9 < sum(fast) < 60.2
    assert max(clock.waits) == 5.0
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "no Consul agent listens at http://127.0.0.1:8500" in errors[0], errors


def test_a_client_consul_not_joined_yet_is_polled_every_0_2_s_for_a_short_while_only(caplog):
    """A client's Consul listens a moment before it joined; until then it denies every token."""
    clock = Clock()
    soon = (token_not_made_yet(), consul_starting("http://127.0.0.1:8500"), consul_not_joined())
    me = retrying(
        sequence(REFUSED, REFUSED, NARROW, NARROW), clock, logging.getLogger("t"), "x", soon=soon, clock=clock
    )
    assert me == {"Config": {"NodeName": "n1"}} and clock.waits == [0.1, 0.1, 0.2, 0.2]

    clock = Clock(until=100)
    with caplog.at_level(logging.INFO, logger="test.agent"):
        retrying(failing(10**6, NARROW), clock, logging.getLogger("test.agent"), "x", soon=soon, clock=clock)
    fast = [w for w in clock.waits if w == 0.2]
    assert clock.waits[: len(fast)] == fast and 9.9 < sum(fast) < 10.3  # a token too narrow: 10 s, not 40
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "may not read this node's agent" in errors[0], errors


def test_the_agent_waits_for_its_consul_to_listen_with_bare_socket_connects():
    import socket
    import threading

    from foundation_cli.agent.runner import wait_listening
    from foundation_cli.raw.address import ConsulAddress

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # a free port: nothing listens there yet
    stop = threading.Event()
    assert wait_listening(ConsulAddress("http", "127.0.0.1", port), stop, timeout=0.2) is False

    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    later = threading.Timer(0.15, lambda: (server.bind(("127.0.0.1", port)), server.listen()))
    later.start()
    try:
        assert wait_listening(ConsulAddress("http", "127.0.0.1", port), stop, timeout=5) is True
    finally:
        later.join()
        server.close()
    stop.set()
    assert wait_listening(ConsulAddress("http", "127.0.0.1", port), stop, timeout=5) is False  # stopped: no wait
