"""What every agent task gets: the node, a Consul client factory, settings, a logger, the data dir."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation_cli.core import keys
from foundation_cli.core.retry import backoff
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import Recorder
from foundation_cli.settings import Settings

AGENT_SERVICE = keys.AGENT_SERVICE


def data_root() -> Path:
    """Per-node data directory: ``$FOUNDATION_DATA_DIR``, else /var/lib/foundation (root), else the user's."""
    explicit = os.environ.get("FOUNDATION_DATA_DIR")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/foundation")
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "foundation"


class AgentRecorder(Recorder):
    """A recorder for a long-running process: notifies listeners, keeps nothing (no unbounded growth)."""

    def add(self, op: RawOperation) -> RawOperation:
        for listener in list(self._listeners):
            try:
                listener(op)
            except Exception:  # a log listener must never break a Consul call
                pass
        return op


class ExplainLog:
    """``agent run --explain``: log every raw operation, folding repeats of the same request.

    The fence confirms and TTL passes repeat several times a second; each
    distinct request line is logged the first time and then at most once a
    minute with how many times it was sent meanwhile.
    """

    def __init__(self, logger: logging.Logger, *, fold_seconds: float = 60.0) -> None:
        self.logger = logger
        self.fold_seconds = fold_seconds
        self._seen: dict[str, tuple[float, int]] = {}
        self._lock = threading.Lock()

    def __call__(self, op: RawOperation) -> None:
        from foundation_cli.raw import render

        lines = render.render_lines(op)
        key = lines[0].split("?index=")[0]
        now = time.monotonic()
        with self._lock:
            last, count = self._seen.get(key, (0.0, 0))
            if last and now - last < self.fold_seconds:
                self._seen[key] = (last, count + 1)
                return
            self._seen[key] = (now, 0)
        suffix = f"  (sent {count} more times in the last {self.fold_seconds:.0f}s)" if count else ""
        self.logger.info("raw: %s  -> %s%s", lines[0], render.outcome(op), suffix)
        for extra in lines[1:]:
            self.logger.info("raw:   %s", extra)


@dataclass
class AgentContext:
    """Shared by all tasks of one agent process."""

    node: str
    settings: Settings
    logger: logging.Logger
    recorder: Recorder
    data_dir: Path
    agent_service_id: str
    agent_check_id: str
    node_meta: dict[str, str] = field(default_factory=dict)
    # Set by tasks that must finish work before the agent deregisters itself.
    extra: dict[str, Any] = field(default_factory=dict)

    def consul(self, *, timeout: float | None = 10.0):
        """A new recording Consul client (one per thread: requests sessions are not shared).

        No failover: an agent speaks only to its own node's Consul agent.
        """
        from foundation_cli.tools import consul as consul_tool

        return consul_tool.connect(self.settings, recorder=self.recorder, timeout=timeout, failover=False)

    def node_dir(self) -> Path:
        """This node's own directory under the data root (agents of several nodes may share a root)."""
        path = self.data_dir / "nodes" / self.node
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass(frozen=True)
class Soon:
    """A failure expected to clear within moments: retried every ``step`` s for ``window`` s (not backed
    off, so the caller goes on as soon as it clears), then like any other failure after one log line
    (``why_still``) — a failure that does not clear is never polled fast for ever."""

    matches: Callable[[BaseException], bool]
    window: float
    why_still: str
    step: float = 0.2


def retrying(
    fn: Callable[[], Any],
    stop: threading.Event,
    logger: logging.Logger,
    what: str,
    *,
    cap: float = 5.0,
    soon: Soon | tuple[Soon, ...] = (),
    clock: Callable[[], float] = time.monotonic,
) -> Any:
    """Call ``fn`` until it succeeds or ``stop`` is set; log each failure once per streak.

    Consul answers 500 ("No cluster leader") during elections and refuses
    connections while the local agent restarts: the agent rides through both.
    ``soon``: failures retried at short steps for a while (:class:`Soon`), each with its own window.
    Returns ``None`` when stopped before success.
    """
    soons = (soon,) if isinstance(soon, Soon) else soon
    attempt = 0
    first_failure: float | None = None
    soon_since: dict[int, float] = {}
    said_still: set[int] = set()
    while not stop.is_set():
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - any failure is retried
            now = clock()
            if first_failure is None:
                first_failure = now
                logger.warning("%s failed (%s); retrying", what, _short(exc))
            kind = next((i for i, s in enumerate(soons) if s.matches(exc)), None)
            if kind is not None:
                since = soon_since.setdefault(kind, now)
                if now - since < soons[kind].window:
                    stop.wait(soons[kind].step)
                    continue
                if kind not in said_still:
                    logger.error(
                        "%s still failing after %.0f s (%s): %s", what, now - since, _short(exc), soons[kind].why_still
                    )
                    said_still.add(kind)
            stop.wait(backoff(attempt, cap=cap))
            attempt += 1
        else:
            if first_failure is not None:
                logger.info("%s succeeded %.1f s after its first failure", what, clock() - first_failure)
            return result
    return None


def _short(exc: BaseException) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return text.strip().splitlines()[0][:200] if text.strip() else type(exc).__name__
