"""The placement timings, and the one inequality that makes self-fencing safe.

A singleton's lock is held by the node's session. When the servers
invalidate that session (node failure detected by gossip, or the agent's TTL
check expired), Consul refuses the lock to everyone for ``lock_delay``. The
holder confirms its session with a ``?consistent`` read every
``confirm_interval``; a confirmation counts from the moment the request was
*sent*, which is no later than the moment the leader answered, so the session
was still valid then and any invalidation happens after it. If no
confirmation succeeds for ``fence_timeout``, the holder stops its processes:
SIGTERM, then SIGKILL ``fence_kill_grace`` later. Hence the old process is
gone at most ``fence_timeout + fence_kill_grace + fence_margin`` after the last
confirmation, and a new holder can start at the earliest ``lock_delay`` after
it. Safety needs::

    fence_timeout + fence_kill_grace + fence_margin  <  lock_delay

Crash failover is then roughly gossip failure detection + ``lock_delay``; see
docs/placement.md for the trade-off (a shorter fence timeout means a Raft
leader election longer than it stops singletons for a moment).
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
    acquire_retry: float = 0.1  # while a free lock is refused (lock-delay in force)
    stop_grace: float = 5.0  # `stop`, lost spec, agent SIGTERM: SIGTERM then SIGKILL after this
    agent_ttl: float = 10.0
    agent_ttl_pass: float = 2.0
    service_ttl: float = 60.0
    housekeeping: float = 20.0  # service TTL passes, log rotation

    def check(self) -> Timing:
        """Refuse timings that would let a partitioned holder overlap its successor."""
        need = self.fence_timeout + self.fence_kill_grace + self.fence_margin
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
