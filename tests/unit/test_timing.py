"""The placement timings: the fencing invariant (with its arithmetic) and the acquire schedule."""

from __future__ import annotations

import pytest

from foundation_cli.core.timing import Timing, next_acquire, session_lock_delay
from foundation_cli.errors import UsageError


def test_defaults_keep_the_guard_stop_bound_below_lock_delay():
    t = Timing()
    # fence_timeout + fence_kill_grace + fence_margin = the latest a fenced copy is gone after its
    # holder's last confirmation; lock-delay starts after that confirmation.
    assert t.guard_stop_bound() == pytest.approx(t.fence_timeout + t.fence_kill_grace + t.fence_margin)
    assert t.guard_stop_bound() < t.lock_delay
    assert t.check() is t
    # confirmations come often enough, and time out early enough, to renew before the fence fires
    assert t.confirm_request_timeout < t.fence_timeout
    assert t.confirm_interval < t.fence_timeout / 2


@pytest.mark.parametrize(
    ("lock_delay", "fence", "grace", "margin", "safe"),
    [
        (2.5, 1.2, 0.6, 0.5, True),  # the defaults: 2.3 < 2.5
        (2.3, 1.2, 0.6, 0.5, False),  # equal is not enough
        (2.2, 1.0, 0.6, 0.5, True),  # the live pair of campaign 7: 2.1 < 2.2
        (2.0, 1.0, 0.45, 0.5, True),
        (2.0, 1.0, 0.6, 0.5, False),
        (1.0, 1.2, 0.6, 0.5, False),
    ],
)
def test_check_refuses_a_lock_delay_not_above_the_guard_stop_bound(lock_delay, fence, grace, margin, safe):
    t = Timing(lock_delay=lock_delay, fence_timeout=fence, fence_kill_grace=grace, fence_margin=margin)
    t = Timing(**{**t.__dict__, "confirm_interval": fence / 4, "confirm_request_timeout": fence * 0.66})
    if safe:
        assert t.check() is t
    else:
        with pytest.raises(UsageError, match="must stay below lock-delay"):
            t.check()


def test_env_and_live_overrides_are_checked_against_the_invariant():
    with pytest.raises(UsageError):
        Timing.from_env({"FOUNDATION_LOCK_DELAY": "2.0"})  # 2.3 ≥ 2.0
    assert Timing.from_env({"FOUNDATION_LOCK_DELAY": "2.2", "FOUNDATION_FENCE_TIMEOUT": "1.0"}).lock_delay == 2.2
    base = Timing()
    assert base.with_live({"singleton.lock_delay": 1.5}) is base  # unsafe live pair: ignored
    live = base.with_live({"singleton.lock_delay": 2.2, "singleton.fence_timeout": 1.0})
    assert (live.lock_delay, live.fence_timeout) == (2.2, 1.0)
    assert live.guard_stop_bound() < live.lock_delay


def test_next_acquire_retries_exactly_when_the_lock_delay_ends():
    t = Timing()
    # Refused right after the lock went free at 100.0: the next try is at 100.0 + lock-delay at the
    # latest, with slow tries (every acquire_wait_retry) before it in case the old session's was shorter.
    assert next_acquire(100.0, 100.0, 2.5, t) == pytest.approx(100.5)
    assert next_acquire(102.2, 100.0, 2.5, t) == pytest.approx(102.5)
    assert next_acquire(102.49, 100.0, 2.5, t) == pytest.approx(102.5)
    # Refused at or after the expected end (the old session's lock-delay was longer, or it started a
    # little later than we saw): retry soon, not a coarse poll later.
    assert next_acquire(102.5, 100.0, 2.5, t) == pytest.approx(102.55)
    assert next_acquire(104.0, 100.0, 2.5, t) == pytest.approx(104.05)


def test_next_acquire_never_goes_backwards_or_waits_past_the_end():
    t = Timing()
    for now in [100.0 + i * 0.07 for i in range(60)]:
        at = next_acquire(now, 100.0, 2.5, t)
        assert at > now
        assert at <= max(102.5, now + t.acquire_retry) + 1e-9
        assert at - now <= t.acquire_wait_retry + 1e-9


@pytest.mark.parametrize(
    ("info", "expected"),
    [
        ({"LockDelay": 2_500_000_000}, 2.5),  # Consul's JSON: nanoseconds
        ({"LockDelay": 15_000_000_000}, 15.0),
        ({"LockDelay": "2500ms"}, 2.5),
        ({"LockDelay": "2.2s"}, 2.2),
        ({"LockDelay": 0}, 0.0),
        ({"LockDelay": "soon"}, 9.0),
        ({"LockDelay": None}, 9.0),
        ({"LockDelay": True}, 9.0),
        ({}, 9.0),
        (None, 9.0),
    ],
)
def test_session_lock_delay(info, expected):
    assert session_lock_delay(info, 9.0) == pytest.approx(expected)
