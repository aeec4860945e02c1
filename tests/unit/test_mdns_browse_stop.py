"""When a one-shot mDNS browse stops: at ``expect`` answers, once the answers settle, else at ``timeout``.

A fake browser on a fake clock: each answer arrives at a given time; waiting for the next one
advances the clock. No sockets, no real time.
"""

from __future__ import annotations

import pytest

from foundation_cli.tools import mdns
from foundation_cli.tools.mdns_wire import Answer


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


def fake_browser(clock: FakeClock, arrivals: list[float]):
    """A Browser whose answers arrive ``arrivals`` seconds after start (one instance each)."""

    class FakeBrowser:
        def __init__(self, binding, types) -> None:
            self.types = list(types)
            self.pending = sorted(arrivals)
            self.start_at = clock.now

        def start(self, *, record: bool = True) -> None:
            self.start_at = clock.now

        def next(self, timeout: float):
            if not self.pending or self.start_at + self.pending[0] > clock.now + timeout:
                clock.now += max(timeout, 0.0)  # waited the whole time: nothing came
                return None
            at = self.pending.pop(0)
            clock.now = self.start_at + at
            n = len(arrivals) - len(self.pending)
            return Answer(service_type=mdns.SERVICE_TYPE, instance=f"h{n}", addresses=[f"198.18.0.{n}"]), False

        def close(self) -> None:
            pass

    return FakeBrowser


@pytest.fixture
def clock(monkeypatch):
    c = FakeClock()
    monkeypatch.setattr(mdns.time, "monotonic", c.monotonic)
    monkeypatch.setattr(mdns, "_record", lambda *a, **k: None)
    return c


def browse(clock, monkeypatch, arrivals, **kw):
    monkeypatch.setattr(mdns, "Browser", fake_browser(clock, arrivals))
    start = clock.now
    found = mdns.browse(mdns.Binding(addresses=["198.18.0.1"]), timeout=2.0, **kw)
    return len(found), round(clock.now - start, 3)


def test_without_settle_it_listens_the_whole_timeout(clock, monkeypatch):
    assert browse(clock, monkeypatch, [0.05, 0.06, 0.08]) == (3, 2.0)


def test_expect_stops_at_the_nth_answer(clock, monkeypatch):
    assert browse(clock, monkeypatch, [0.05, 0.06, 0.08, 0.5], expect=3) == (3, 0.08)


def test_settle_stops_once_nothing_new_answered_for_that_long(clock, monkeypatch):
    assert browse(clock, monkeypatch, [0.05, 0.06, 0.08], settle=0.5) == (3, 0.58)


def test_settle_waits_for_a_late_answer_within_the_window(clock, monkeypatch):
    assert browse(clock, monkeypatch, [0.05, 0.4, 0.85], settle=0.5) == (3, 1.35)


def test_settle_with_nothing_answering_waits_the_timeout(clock, monkeypatch):
    assert browse(clock, monkeypatch, [], settle=0.5) == (0, 2.0)
