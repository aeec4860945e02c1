"""The listener's bookkeeping (de-duplication, order, gaps, history hand-over) over scripted event lists.

Consul itself is exercised in tests/integration/test_channels*.py; this pins the
pure logic of :meth:`Channels.listen` against answers we choose.
"""

from __future__ import annotations

import threading

from foundation_cli.core.envelope import Envelope, Since
from foundation_cli.errors import FoundationError
from foundation_cli.facades.channels import Channels


def event(event_id: str, message_id: str, text: str = "x") -> dict:
    wire = Envelope(id=message_id, time=1.0, sender="n", content_type="text/plain", data=text.encode()).to_wire()
    return {"ID": event_id, "Name": "foundation:ch", "Payload": wire}


class ScriptedConsul:
    """Answers /v1/event/list from a script; the stop event is set when the script runs out."""

    def __init__(self, answers: list, history: list[dict] | None = None) -> None:
        self.answers = list(answers)
        self.history = history or []
        self.stop = threading.Event()
        self.event = self
        self.agent = self
        self.kv = self

    def self(self) -> dict:
        return {"Config": {"NodeName": "n"}}

    def list(self, name=None, index=None, wait=None):
        answer = self.answers.pop(0)
        if not self.answers:
            self.stop.set()
        if isinstance(answer, Exception):
            raise answer
        return answer

    def get(self, key, recurse=False, keys=False):
        return 1, self.history


def run(client: ScriptedConsul, **kw) -> tuple[list[str], list[str]]:
    gaps: list[str] = []
    got = [m.id for m in Channels(client).listen("ch", stop=client.stop, wait=1, on_gap=gaps.append, **kw)]
    return got, gaps


def test_prints_only_new_events_once_in_agent_order() -> None:
    a, b, c = (
        event("e1", "0000000000001-aaaaaa"),
        event("e2", "0000000000002-bbbbbb"),
        event("e3", "0000000000003-cccccc"),
    )
    client = ScriptedConsul([("h1", [a]), ("h2", [a, b]), ("h2", [a, b]), ("h3", [a, b, c]), ("h3", [a, b, c])])
    got, gaps = run(client)
    assert got == ["0000000000002-bbbbbb", "0000000000003-cccccc"] and gaps == []


def test_warns_when_the_agent_buffer_rolled_over() -> None:
    old, new = event("e1", "0000000000001-aaaaaa"), event("e9", "0000000000009-999999")
    client = ScriptedConsul([("h1", [old]), ("h9", [new]), ("h9", [new])])
    got, gaps = run(client)
    assert got == ["0000000000009-999999"] and "256" in gaps[0]


def test_history_then_live_without_repeating_a_message() -> None:
    m1, m2 = "0000000000001-aaaaaa", "0000000000002-bbbbbb"
    stored = [{"Key": f"foundation/channels/ch/history/{m}", "Value": event("x", m)["Payload"]} for m in (m1, m2)]
    live = event("e2", m2)  # the durable message's own event arrives after the replay
    client = ScriptedConsul([("h0", []), ("h2", [live]), ("h2", [live])], history=stored)
    got, _gaps = run(client, since=Since(from_time=0.0))
    assert got == [m1, m2]


def test_rides_through_a_failing_read() -> None:
    a = event("e1", "0000000000001-aaaaaa")
    client = ScriptedConsul([("h0", []), FoundationError("Consul error: 500 no leader"), ("h1", [a]), ("h1", [a])])
    got, gaps = run(client)
    assert got == ["0000000000001-aaaaaa"] and "retrying" in gaps[0]
