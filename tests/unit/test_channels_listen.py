"""The listener's bookkeeping (de-duplication, order, gaps, history catch-up, its reader threads) over scripted answers.

Consul itself is exercised in tests/integration/test_channels*.py; this pins the
pure logic of :meth:`Channels.listen` against answers we choose.
"""

from __future__ import annotations

import threading
import time

from foundation_cli.core.envelope import Envelope, Since
from foundation_cli.errors import FoundationError, PermissionDeniedError
from foundation_cli.facades.channels import Channels

PREFIX = "foundation/channels/ch/history/"


def wire(message_id: str, text: str = "x") -> bytes:
    return Envelope(id=message_id, time=1.0, sender="n", content_type="text/plain", data=text.encode()).to_wire()


def event(event_id: str, message_id: str, text: str = "x") -> dict:
    return {"ID": event_id, "Name": "foundation:ch", "Payload": wire(message_id, text)}


class ScriptedConsul:
    """Answers /v1/event/list and the history's ``?keys`` listing from two scripts.

    The first answer of each script is the listener's initial read. When a script runs
    out, every earlier answer has been handed to the listener (each reader is one thread
    reading in turn): ``stop`` is set once both have, and the listener returns after
    handing out what it has read.
    """

    def __init__(self, answers: list, history: list | None = None, stored: dict[str, bytes] | None = None) -> None:
        self.answers = list(answers)
        self.history = list(history or [(1, [])])
        self.stored = stored or {}
        self.done = {"events": threading.Event(), "history": threading.Event()}
        self.stop = self  # stop.is_set(): both scripts ran out
        self.event = self
        self.agent = self
        self.kv = self

    def is_set(self) -> bool:
        return all(e.is_set() for e in self.done.values())

    def self(self) -> dict:
        return {"Config": {"NodeName": "n"}}

    def _next(self, script: list, which: str):
        if len(script) > 1:
            answer = script.pop(0)
        else:
            self.done[which].set()
            time.sleep(0.05)  # a blocking query that found nothing new
            answer = script[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def list(self, name=None, index=None, wait=None):
        return self._next(self.answers, "events")

    def get(self, key, recurse=False, keys=False, index=None, wait=None, consistency=None):
        if keys:
            index_, ids = self._next(self.history, "history")
            return index_, [PREFIX + i for i in ids]
        if recurse:
            return 1, [{"Key": PREFIX + i, "Value": v} for i, v in sorted(self.stored.items())]
        value = self.stored.get(key[len(PREFIX) :])
        return 1, None if value is None else {"Key": key, "Value": value}


def run(client: ScriptedConsul, **kw) -> tuple[list[str], list[str]]:
    gaps: list[str] = []
    kw.setdefault("catch_up_after", 0.0)
    got = [m.id for m in Channels(client).listen("ch", stop=client.stop, wait=1, on_gap=gaps.append, **kw)]
    return got, gaps


A, B, C = "0000000000001-aaaaaa", "0000000000002-bbbbbb", "0000000000003-cccccc"


def test_prints_only_new_events_once_in_agent_order() -> None:
    a, b, c = event("e1", A), event("e2", B), event("e3", C)
    client = ScriptedConsul([("h1", [a]), ("h2", [a, b]), ("h2", [a, b]), ("h3", [a, b, c]), ("h3", [a, b, c])])
    got, gaps = run(client)
    assert got == [B, C] and gaps == []


def test_warns_when_the_agent_buffer_rolled_over() -> None:
    old, new = event("e1", A), event("e9", "0000000000009-999999")
    client = ScriptedConsul([("h1", [old]), ("h9", [new]), ("h9", [new])])
    got, gaps = run(client)
    assert got == ["0000000000009-999999"] and "256" in gaps[0]


def test_history_then_live_without_repeating_a_message() -> None:
    live = event("e2", B)  # the durable message's own event arrives after the replay
    client = ScriptedConsul([("h0", []), ("h2", [live]), ("h2", [live])], stored={A: wire(A), B: wire(B)})
    got, _gaps = run(client, since=Since(from_time=0.0))
    assert got == [A, B]


def test_rides_through_a_failing_read() -> None:
    a = event("e1", A)
    client = ScriptedConsul([("h0", []), FoundationError("Consul error: 500 no leader"), ("h1", [a]), ("h1", [a])])
    got, gaps = run(client)
    assert got == [A] and "retrying" in gaps[0]


def test_a_durable_message_lost_as_an_event_is_read_from_the_history_once() -> None:
    # B's event never reaches this agent (gossip loss, or a buffer overrun); C's does, and C is durable too.
    c = event("e3", C)
    client = ScriptedConsul(
        [("h0", []), ("h3", [c]), ("h3", [c])],
        history=[(5, []), (6, [B]), (7, [B, C]), (7, [B, C])],
        stored={B: wire(B, "from kv"), C: wire(C)},
    )
    got, gaps = run(client)
    assert sorted(got) == [B, C] and gaps == []


def test_a_durable_message_trimmed_before_it_was_read_is_reported() -> None:
    client = ScriptedConsul([("h0", []), ("h0", [])], history=[(5, []), (6, [B]), (6, [B])], stored={})
    got, gaps = run(client)
    assert got == [] and B in gaps[0] and "trimmed" in gaps[0]


def test_a_durable_message_filtered_to_other_nodes_is_not_caught_up_here() -> None:
    import json

    def filtered(message_id: str, **filters: str) -> bytes:
        return json.dumps({**json.loads(wire(message_id)), "f": filters}).encode()

    # This agent is node "n": B was sent with --node '^other$', C with --node '^n$'; neither event arrived.
    client = ScriptedConsul(
        [("h0", []), ("h0", [])],
        history=[(5, []), (7, [B, C]), (7, [B, C])],
        stored={B: filtered(B, node="^other$"), C: filtered(C, node="^n$")},
    )
    got, gaps = run(client)
    assert got == [C] and gaps == []


def test_without_read_access_to_the_history_live_events_still_flow() -> None:
    a = event("e1", A)
    refused = PermissionDeniedError("Consul refused GET /v1/kv/…: permission denied (403)")
    client = ScriptedConsul([("h0", []), ("h1", [a]), ("h1", [a])], history=[(5, []), refused, refused])
    gaps: list[str] = []

    class Stop:  # the history reader gives up after a 403 (it is asked once): stop once it said so
        def is_set(self) -> bool:
            return client.done["events"].is_set() and bool(gaps)

    got = [m.id for m in Channels(client).listen("ch", stop=Stop(), wait=1, on_gap=gaps.append)]  # type: ignore[arg-type]
    assert got == [A] and len(gaps) == 1 and "durable history" in gaps[0]


def test_a_token_that_cannot_read_the_history_still_listens() -> None:
    a = event("e1", A)
    refused = PermissionDeniedError("Consul refused GET /v1/kv/…: permission denied (403)")
    client = ScriptedConsul([("h0", []), ("h1", [a]), ("h1", [a])], history=[refused, refused])
    client.done["history"].set()  # no history reader is started
    got, gaps = run(client)
    assert got == [A] and len(gaps) == 1 and "durable history" in gaps[0]


class BufferedAgent:
    """An agent that keeps the last ``size`` events, which arrive in the background every ``every`` seconds."""

    def __init__(self, count: int, size: int, every: float) -> None:
        self.count, self.size, self.every = count, size, every
        self.buffer: list[dict] = []
        self.lock = threading.Condition()
        self.finished = threading.Event()
        self.event = self.agent = self.kv = self

    def fire_all(self) -> None:
        for i in range(self.count):
            with self.lock:
                self.buffer = (self.buffer + [event(f"e{i}", f"{i:013d}-aaaaaa")])[-self.size :]
                self.lock.notify_all()
            time.sleep(self.every)
        self.finished.set()

    def self(self) -> dict:
        return {"Config": {"NodeName": "n"}}

    def list(self, name=None, index=None, wait=None):
        with self.lock:  # a blocking query: returns as soon as the newest event differs from ``index``
            self.lock.wait_for(lambda: not self.buffer or self.buffer[-1]["ID"] != index, timeout=0.2)
            return (self.buffer[-1]["ID"] if self.buffer else "0"), list(self.buffer)

    def get(self, key, recurse=False, keys=False, index=None, wait=None, consistency=None):
        time.sleep(0.05)
        return 1, None


def test_a_slow_consumer_does_not_make_the_reader_fall_behind_the_agent_buffer() -> None:
    # 100 events, one every 10 ms, an agent that keeps the last 32 (room for a 320 ms pause), a consumer
    # that needs 25 ms per message (2.5 s in all): a listener that read the event list only between two
    # messages would lose many of them (the old one did); one whose reader runs on its own loses none.
    agent = BufferedAgent(count=100, size=32, every=0.01)
    stop = threading.Event()
    got: list[str] = []
    firing = threading.Thread(target=agent.fire_all)

    def give_up() -> None:  # bounds the test if messages were lost: 3 s after the last one was fired
        firing.join()
        stop.wait(3.0)
        stop.set()

    def ready(_node: str) -> None:
        firing.start()
        threading.Thread(target=give_up, daemon=True).start()

    for message in Channels(agent).listen("ch", stop=stop, wait=1, on_ready=ready):
        got.append(message.id)
        time.sleep(0.025)
        if len(got) == 100:
            stop.set()
    assert got == [f"{i:013d}-aaaaaa" for i in range(100)]
