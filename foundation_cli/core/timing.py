"""The placement timings, and the one inequality that makes self-fencing safe.

A singleton's lock is held by the node's session. When the servers
invalidate that session (node failure detected by gossip, the agent's TTL
check expired, or another agent's holder detector destroyed it), Consul
refuses the lock to everyone for ``lock_delay``, counted from the
invalidation. The holder confirms its session with a ``?consistent`` read every
``confirm_interval``; a confirmation counts from the moment the request was
*sent* (C), which is no later than the moment the leader answered, so the
session was still valid then and the invalidation (I) comes after it: C < I.

The holder's copy is stopped by whichever comes first of the agent's own fence
and its fence guard (a separate process that does not need the agent alive or
scheduled): both fire at ``C + fence_timeout`` with no confirmation since, send
SIGTERM, then SIGKILL ``fence_kill_grace`` later. So the **fence guard's maximum
time-to-stop** of a partitioned or frozen holder, counted from its last
confirmation, is::

    guard_stop_bound = fence_timeout + fence_kill_grace + fence_margin

where ``fence_margin`` covers the guard's wake-up after its deadline on a busy
node, its 20 ms poll during the grace, SIGKILL delivery, and clock-rate
differences between the holder's monotonic clock and the leader's wall clock.
A new holder acquires at the earliest at ``I + lock_delay > C + lock_delay``.
No overlap therefore needs (the invariant, :meth:`Timing.check`)::

    guard_stop_bound < lock_delay
    defaults: 1.2 s + 0.6 s + 0.5 s = 2.3 s  <  2.5 s   (0.2 s to spare)

Nothing else in the takeover buys safety: failure detection, the contender's
retries and the spawn only add to ``I + lock_delay``. So a contender retries
exactly when the lock-delay it saw start ends (:func:`next_acquire`), not on a
coarse poll. Crash takeover ≈ detection (≈ 0.1 s) + ``lock_delay`` + acquire
and spawn; see docs/placement.md for the trade-off (a shorter fence timeout
means a Raft leader election longer than it stops singletons for a moment).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Protocol

from foundation_cli.errors import UsageError


class SupportsGet(Protocol):
    """What :meth:`Timing.with_live` reads: ``LIVE`` (or a plain dict in tests)."""

    def get(self, key: str, default: Any = None) -> Any: ...


@dataclass(frozen=True)
class Timing:
    lock_delay: float = 2.5
    fence_timeout: float = 1.2
    fence_kill_grace: float = 0.6
    fence_margin: float = 0.5  # watchdog tick, kill latency, scheduling noise on a busy node
    confirm_interval: float = 0.3
    confirm_request_timeout: float = 0.8
    acquire_retry: float = 0.05  # a free lock refused once its lock-delay should have ended: retry this often
    acquire_wait_retry: float = 0.5  # … and at most this long apart while it is still expected in force
    stop_grace: float = 5.0  # `stop`, lost spec, agent SIGTERM: SIGTERM then SIGKILL after this
    agent_ttl: float = 10.0
    agent_ttl_pass: float = 2.0
    service_ttl: float = 60.0
    housekeeping: float = 20.0  # service TTL passes, log rotation

    def guard_stop_bound(self) -> float:
        """Latest a fenced holder's copy is gone, in seconds after its last confirmation (module doc)."""
        return self.fence_timeout + self.fence_kill_grace + self.fence_margin

    def check(self) -> Timing:
        """Refuse timings that would let a partitioned holder overlap its successor."""
        need = self.guard_stop_bound()
        if need >= self.lock_delay:
            raise UsageError(
                f"unsafe placement timing: fence timeout {self.fence_timeout}s + kill grace "
                f"{self.fence_kill_grace}s + margin {self.fence_margin}s must stay below lock-delay {self.lock_delay}s"
            )
        if self.confirm_request_timeout >= self.fence_timeout or self.confirm_interval >= self.fence_timeout / 2:
            raise UsageError("unsafe placement timing: confirm interval/timeout too long for the fence timeout")
        return self

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Timing:
        """Defaults, overridable by FOUNDATION_LOCK_DELAY / FOUNDATION_FENCE_TIMEOUT / FOUNDATION_FENCE_KILL_GRACE."""
        env = dict(os.environ if env is None else env)
        values: dict[str, float] = {}
        for var, name in (
            ("FOUNDATION_LOCK_DELAY", "lock_delay"),
            ("FOUNDATION_FENCE_TIMEOUT", "fence_timeout"),
            ("FOUNDATION_FENCE_KILL_GRACE", "fence_kill_grace"),
            ("FOUNDATION_STOP_GRACE", "stop_grace"),
        ):
            if env.get(var):
                try:
                    values[name] = float(env[var])
                except ValueError:
                    raise UsageError(f"invalid {var}={env[var]!r}: expected seconds") from None
        timing = cls(**values)
        if "fence_timeout" in values:
            ft = values["fence_timeout"]
            timing = cls(
                **values,
                confirm_interval=min(cls.confirm_interval, ft / 4),
                confirm_request_timeout=min(cls.confirm_request_timeout, ft * 0.66),
            )
        return timing.check()

    def with_live(self, live: SupportsGet) -> Timing:
        """These timings with the cluster-wide ``singleton.lock_delay`` / ``singleton.fence_timeout``.

        Used when a new session is created, so the lock-delay Consul enforces and the
        fence timeout the holder obeys always come from one validated pair; an unsafe
        pair (refused by :meth:`check`) leaves these timings unchanged. ``live`` is
        :data:`foundation_cli.core.live_settings.LIVE` (passed in: that module builds on this one).
        """
        lock_delay = live.get("singleton.lock_delay")
        fence = live.get("singleton.fence_timeout")
        if lock_delay is None and fence is None:
            return self
        fence = self.fence_timeout if fence is None else float(fence)
        candidate = replace(
            self,
            lock_delay=self.lock_delay if lock_delay is None else float(lock_delay),
            fence_timeout=fence,
            confirm_interval=min(self.confirm_interval, fence / 4),
            confirm_request_timeout=min(self.confirm_request_timeout, fence * 0.66),
        )
        try:
            return candidate.check()
        except UsageError:
            return self

    def lock_delay_text(self) -> str:
        """Consul duration syntax for the session's LockDelay."""
        return f"{int(round(self.lock_delay * 1000))}ms"


def next_acquire(now: float, free_since: float, lock_delay: float, timing: Timing) -> float:
    """When to try again to acquire a free lock whose acquire Consul just refused (lock-delay in force).

    ``free_since``: when the lock-delay started as far as this agent can tell —
    the answer to its own destroy of the holder's session, or when its watch
    first showed the lock free; both come after the invalidation, so the
    lock-delay ends no later than ``free_since + lock_delay``. Retry right at that moment, then
    every ``acquire_retry`` (the old holder's session may carry a longer
    lock-delay than ours); until then only every ``acquire_wait_retry`` (a
    shorter one, set before a live change). No retry waits for a poll tick past
    the end: that time would not buy safety (the module doc).
    """
    expected_end = free_since + lock_delay
    if now < expected_end:
        return min(expected_end, now + timing.acquire_wait_retry)
    return now + timing.acquire_retry


def session_lock_delay(info: dict | None, default: float) -> float:
    """A session's ``LockDelay`` in seconds from ``/v1/session/info`` (nanoseconds; "2.5s" also read)."""
    value = (info or {}).get("LockDelay")
    if isinstance(value, bool):
        return default
    if isinstance(value, (int, float)):
        return max(0.0, float(value) / 1e9)
    if isinstance(value, str):
        text = value.strip()
        for suffix, scale in (("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9), ("s", 1.0)):
            if text.endswith(suffix):
                try:
                    return max(0.0, float(text[: -len(suffix)]) * scale)
                except ValueError:
                    return default
    return default
