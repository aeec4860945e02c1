"""The contender's side of a takeover: it acquires when lock-delay ends, with nothing in front of the acquire.

The reconciler's ``_singleton`` is driven on a fake clock with a scripted Consul client (no network):
what it sends, and when, is the logic under test; the real thing runs in the placement lab tests and
the fault campaign (bench/faults.py).
"""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import pytest

from foundation_cli.agent import placement as placement_mod
from foundation_cli.agent.placement import PREFLIGHT_AHEAD, Placement
from foundation_cli.core.service_spec import ServiceSpec
from foundation_cli.core.timing import Timing

SPEC = ServiceSpec(name="wit", mode="singleton", command=["sleep", "60"])


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Client:
    """Answers the few calls ``_singleton`` makes; records (time, call)."""

    def __init__(self, clock: Clock, *, leader_addr: str = "10.0.0.9", lock_free_at: float = 0.0) -> None:
        self.clock, self.leader_addr, self.lock_free_at = clock, leader_addr, lock_free_at
        self.calls: list[tuple[float, str]] = []
        self.kv = SimpleNamespace(acquire=self._acquire, get=self._get)
        self.agent = SimpleNamespace(self=lambda: {"Member": {"Addr": "10.0.0.1"}})
        self.status = SimpleNamespace(leader=self._leader)
        self.health = SimpleNamespace(service=lambda *a, **k: (1, [{"Node": {"Node": "n2"}}]))

    def _note(self, what: str) -> None:
        self.calls.append((round(self.clock(), 3), what))

    def _leader(self) -> str:
        self._note("leader")
        return f"{self.leader_addr}:8300"

    def _acquire(self, key, value, session) -> bool:
        ok = self.clock() >= self.lock_free_at
        self._note("acquire ok" if ok else "acquire refused")
        return ok

    def _get(self, key, consistency=None, **_kw):
        self._note(f"get {key.split('/')[-2]}")
        if key.startswith("foundation/services/"):
            return 1, {"Value": SPEC.to_json()}
        return 1, {"Session": "S", "ModifyIndex": 42}


@pytest.fixture
def rig(monkeypatch, tmp_path):
    clock = Clock(100.0)
    monkeypatch.setattr(time, "monotonic", clock)
    client = Client(clock)
    ctx = SimpleNamespace(
        node="n1",
        logger=logging.getLogger("test-placement"),
        consul=lambda timeout=None: client,
        node_dir=lambda: tmp_path,
        node_meta={},
    )
    p = Placement(ctx, stop=SimpleNamespace(is_set=lambda: False), timing=Timing())
    p.specs, p.specs_loaded, p.holders = {"wit": SPEC}, True, {"wit": None}
    p.session.id, p.session.last_confirmed = "S", clock.now
    started = []
    monkeypatch.setattr(p, "_ensure_running", lambda spec, timers: started.append(clock.now))
    monkeypatch.setattr(placement_mod, "WarmGuard", lambda spec, directory: ("warm", spec.name, clock.now))
    monkeypatch.setattr(p, "_renew_leases", lambda deadline: None)
    return p, clock, client, started


def step(p: Placement, clock: Clock, until: float) -> None:
    """Run the reconciler's singleton pass at each wake-up it asks for, up to ``until``."""
    while clock.now <= until:
        p.session.last_confirmed = clock.now  # the session thread keeps confirming meanwhile
        timers: list[float] = []
        p._singleton(SPEC, timers)
        if not timers or p.holders.get("wit") == "S":
            return
        clock.now = max(clock.now + 0.02, min(timers))  # the loop's minimum wait is 0.02 s


def test_after_its_own_destroy_it_acquires_right_when_lock_delay_ends(rig):
    p, clock, client, started = rig
    client.lock_free_at = 102.5 + 0.01  # the leader applied the destroy 10 ms after we sent it
    p.free_since["wit"], p.acquire_at["wit"] = 100.0, 102.5  # what _watch_holders records at its destroy
    # (an answer at 100.0 bounds the start from above; the 10 ms here stand for a longer old lock-delay)
    step(p, clock, 104.0)
    acquires = [c for c in client.calls if c[1].startswith("acquire")]
    assert acquires == [(102.5, "acquire refused"), (102.55, "acquire ok")]
    # the checks an acquire needs were made ahead (within PREFLIGHT_AHEAD), none between the end and the acquire
    before = [c for c in client.calls if c[0] < 102.5]
    assert [w for _t, w in before] == ["leader", "get services"]
    assert all(t >= 102.5 - PREFLIGHT_AHEAD - 1e-9 for t, _w in before)
    assert started == [102.55] and p.holders["wit"] == "S" and p.tokens["wit"] == 42
    # its fence guard was started ahead too, with the checks (handed to the spawn, not shown here)
    assert p.warm["wit"] == ("warm", "wit", pytest.approx(102.5 - PREFLIGHT_AHEAD))
    assert "wit" not in p.acquire_at and "wit" not in p.free_since


def test_seen_free_by_its_watch_it_tries_once_then_at_the_expected_end(rig):
    p, clock, client, started = rig
    client.lock_free_at = 102.45  # another agent destroyed it 50 ms before our watch showed it free
    step(p, clock, 104.0)
    acquires = [t for t, w in client.calls if w.startswith("acquire")]
    # at once (a released lock has no lock-delay), then every 0.5 s at most, then at 100 + 2.5
    assert acquires == [100.0, 100.5, 101.0, 101.5, 102.0, 102.5]
    assert started == [102.5]
    assert p.warm["wit"][2] >= 102.5 - PREFLIGHT_AHEAD  # not for the slow retries before the end


def test_the_leader_node_lets_the_others_go_first(rig):
    p, clock, client, started = rig
    client.leader_addr = "10.0.0.1"  # this node's Consul is the leader
    client.lock_free_at = 102.5
    p.free_since["wit"], p.acquire_at["wit"] = 100.0, 102.5
    step(p, clock, 104.0)
    acquires = [t for t, w in client.calls if w.startswith("acquire")]
    assert acquires == [pytest.approx(102.5 + placement_mod.LEADER_HANDICAP)]
    assert p.warm == {}  # the leader's node is the least likely winner: no guard ahead


def test_a_spec_gone_in_a_consistent_read_is_not_acquired(rig, monkeypatch):
    p, clock, client, started = rig
    monkeypatch.setattr(p, "_spec_current", lambda spec: False)
    step(p, clock, 103.0)
    assert not [w for _t, w in client.calls if w.startswith("acquire")]
    assert started == []


def test_the_fence_guard_is_started_ahead_even_when_the_checks_are_still_fresh(rig, monkeypatch):
    p, clock, client, started = rig
    monkeypatch.setattr(placement_mod, "PREFLIGHT_FRESH", 5.0)  # one check covers the whole lock-delay
    client.lock_free_at = 102.5
    step(p, clock, 104.0)
    assert [w for _t, w in client.calls].count("get services") == 1
    assert started == [102.5]
    assert 102.5 - PREFLIGHT_AHEAD - 1e-9 <= p.warm["wit"][2] < 102.5


def test_probe_tells_a_refused_connect_from_an_answer():
    import socket

    from foundation_cli.agent.placement import _probe

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        assert _probe("127.0.0.1", port, 0.5) == "ok"
    assert _probe("127.0.0.1", port, 0.5) == "refused"  # closed: nothing listens there any more
