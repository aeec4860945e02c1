"""The node's Consul session (one per agent, shared by all its singleton locks) and self-fencing.

The session is bound to the node's ``serfHealth`` (gossip failure detection)
and to the agent's own TTL check (agent process alive), with the lock-delay
from :class:`~foundation_cli.core.timing.Timing`. One thread confirms it
with ``GET /v1/session/info/<id>?consistent`` — a read the leader only answers
after checking with a quorum that it is still the leader — and fences (stops
every singleton process) when it has gone ``fence_timeout`` without a
confirmation. The per-request timeout shrinks toward the deadline, so the fence
fires on time even while a request hangs. Each confirmation also renews the
lease of every singleton's fence guard (``on_renewed``): the guard enforces the
same deadline from outside, should this process be frozen or dead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from foundation_cli.agent.context import AgentContext, _short
from foundation_cli.core.agent_requests import session_body
from foundation_cli.core.live_settings import LIVE
from foundation_cli.core.timing import Timing


class NodeSession:
    """Create/confirm/destroy the session; call ``on_fence`` / ``on_lost`` from the confirm thread."""

    def __init__(
        self,
        ctx: AgentContext,
        timing: Timing,
        *,
        on_fence: Callable[[], None],
        on_lost: Callable[[], None],
        on_confirmed: Callable[[], None],
        on_renewed: Callable[[float], None] | None = None,
    ) -> None:
        self.ctx = ctx
        self.base_timing = timing
        # Replaced at each session create by base + the live singleton.* settings (one safe pair).
        self.timing = timing
        self.on_fence = on_fence
        self.on_lost = on_lost
        self.on_confirmed = on_confirmed
        self.on_renewed = on_renewed  # gets the new fence deadline (monotonic) after each confirmation
        self.id: str | None = None
        self.last_confirmed = 0.0  # monotonic send time of the last successful confirmation
        self.fenced = False
        self._lock = threading.Lock()
        self._kick = threading.Event()

    # -- state --------------------------------------------------------------------
    def confirmed(self, *, within: float | None = None) -> bool:
        """Whether the session was confirmed within ``within`` seconds (default: the fence timeout)."""
        limit = self.timing.fence_timeout if within is None else within
        return self.id is not None and not self.fenced and time.monotonic() - self.last_confirmed < limit

    def mark_confirmed(self, sent_at: float) -> None:
        """A write that needed the session valid (an acquire) also confirms it."""
        with self._lock:
            if sent_at <= self.last_confirmed:
                return
            self.last_confirmed = sent_at
        if self.on_renewed is not None:
            self.on_renewed(sent_at + self.timing.fence_timeout)

    # -- writes -------------------------------------------------------------------
    def create(self, client) -> str:
        """``PUT /v1/session/create`` with serfHealth + the agent check and our lock-delay."""
        self.timing = self.base_timing.with_live(LIVE)
        sent = time.monotonic()
        sid = client.session.create(session_body(self.ctx.node, self.timing))
        with self._lock:
            self.id = sid
            self.last_confirmed = sent
            self.fenced = False
        self.ctx.logger.info("session %s created (lock-delay %s)", sid, self.timing.lock_delay_text())
        self._kick.set()
        return sid

    def destroy(self, client) -> None:
        sid = self.id
        if not sid:
            return
        self.id = None
        client.session.destroy(sid)

    # -- the confirm/fence loop ------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Confirm every ``confirm_interval``; fence on timeout; report invalidation."""
        client = self.ctx.consul(timeout=self.timing.confirm_request_timeout)
        while not stop.is_set():
            t = self.timing  # the pair in force for the current session
            sid = self.id
            if sid is None:
                self._kick.wait(0.5)
                self._kick.clear()
                continue
            sent = time.monotonic()
            remaining = self.last_confirmed + t.fence_timeout - sent
            client.timeout = max(0.05, min(t.confirm_request_timeout, remaining))
            outcome: bool | None = None
            try:
                _index, info = client.session.info(sid, consistency="consistent")
                outcome = info is not None
            except Exception as exc:  # noqa: BLE001 - unreachable / no leader / timeout: not confirmed
                self.ctx.logger.debug("session confirm failed: %s", _short(exc))
            if stop.is_set():
                return
            if outcome is True and self.id == sid:
                was_fenced = self.fenced
                self.mark_confirmed(sent)
                if was_fenced:
                    self.fenced = False
                    self.ctx.logger.info("session %s confirmed again after fencing", sid)
                    self.on_confirmed()
            elif outcome is False and self.id == sid:
                self.ctx.logger.warning("session %s was invalidated by the servers: locks lost", sid)
                self.fenced = True
                self.on_lost()
                with self._lock:
                    if self.id == sid:
                        self.id = None
                self.fenced = False
                continue
            if not self.fenced and time.monotonic() - self.last_confirmed >= t.fence_timeout:
                self.fenced = True
                self.ctx.logger.warning(
                    "cannot confirm session %s for %.1fs: fencing (stopping singletons)", sid, t.fence_timeout
                )
                self.on_fence()
            delay = t.confirm_interval - (time.monotonic() - sent)
            if delay > 0:
                stop.wait(delay)
