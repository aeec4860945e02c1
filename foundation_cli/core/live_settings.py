"""Settings node agents apply live from cluster-wide config (``foundation config set … --cluster-wide``).

The ``config_apply`` agent task watches ``foundation/config/`` and stores the
parsed values of the keys below in :data:`LIVE`; other agent code reads them
at the moment it needs them, with its own default::

    from foundation_cli.core.live_settings import LIVE
    delay = LIVE.get("singleton.lock_delay", 15.0)   # seconds, float

Only these keys are owned by the agents (anything else under foundation/config/
is stored and shown but not interpreted by Foundation):

    agent.log_level          debug|info|warning|error   level of the agent's loggers ("foundation", "foundation.agent")
    singleton.lock_delay     duration (0s-60s)          Consul session lock-delay for new singleton sessions
    singleton.fence_timeout  duration (500ms-10m)         how long a holder that cannot reach Consul keeps running
    restart.backoff          duration (0s-10m)          delay before restarting a crashed placed process
    restart.backoff_max      duration (0s-1h)           cap of the exponential restart backoff
    optimizer.interval       duration (10s-1d)          time between optimizer rounds (read by the optimizer task)
    snapshot.interval        duration (0s off, 10s-30d) time between scheduled snapshots (the leader's agent)
    snapshot.keep            number (1-1000, 24)        how many scheduled snapshots are kept
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from foundation_cli.core import durations
from foundation_cli.core.timing import Timing

LOG_LEVELS = ("debug", "info", "warning", "error")


def _log_level(text: str) -> str:
    value = text.strip().lower()
    if value not in LOG_LEVELS:
        raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
    return value


def _bounded_duration(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        seconds = durations.parse(text)
        if not low <= seconds <= high:
            raise ValueError(f"must be between {durations.format(low)} and {durations.format(high)}")
        return seconds

    return parse


def _snapshot_interval(text: str) -> float:
    seconds = durations.parse(text)
    if seconds != 0 and not 10 <= seconds <= 30 * 86400:
        raise ValueError("must be 0s (off) or between 10s and 30d")
    return seconds


def _snapshot_keep(text: str) -> int:
    from foundation_cli.core.snapshots import parse_keep

    return parse_keep(text)


def _apply_log_level(level: str) -> None:
    # The agent runner sets its own level on "foundation.agent"; both must follow.
    for name in ("foundation", "foundation.agent"):
        logging.getLogger(name).setLevel(level.upper())


@dataclass(frozen=True)
class LiveSetting:
    """A key the agents own: how to parse its value and (optionally) what applying it does."""

    key: str
    parse: Callable[[str], Any]
    help: str
    apply: Callable[[Any], None] | None = None


OWNED: dict[str, LiveSetting] = {
    s.key: s
    for s in (
        LiveSetting("agent.log_level", _log_level, "agent log level: debug|info|warning|error", _apply_log_level),
        LiveSetting("singleton.lock_delay", _bounded_duration(0, 60), "lock-delay of new singleton sessions"),
        LiveSetting("singleton.fence_timeout", _bounded_duration(0.5, 600), "how long a cut-off holder keeps running"),
        LiveSetting("restart.backoff", _bounded_duration(0, 600), "first delay before restarting a crashed process"),
        LiveSetting("restart.backoff_max", _bounded_duration(0, 3600), "cap of the restart backoff"),
        LiveSetting("optimizer.interval", _bounded_duration(10, 86400), "time between optimizer rounds"),
        LiveSetting("snapshot.interval", _snapshot_interval, "time between scheduled snapshots (0s: off)"),
        LiveSetting("snapshot.keep", _snapshot_keep, "how many scheduled snapshots to keep"),
    )
}


def validate(key: str, value: str) -> Any:
    """Parse ``value`` for an agent-owned ``key`` (:class:`ValueError` if bad); other keys pass as text."""
    setting = OWNED.get(key)
    return setting.parse(value) if setting else value


def check_timing(values: dict[str, Any]) -> str | None:
    """Why these lock-delay / fence-timeout values are unsafe together (``None`` if safe).

    The placement agent fences a cut-off holder before another node may take
    the lock: fence timeout + kill grace + margin must stay below lock-delay
    (see :mod:`foundation_cli.core.timing`). ``values`` holds parsed seconds.
    """
    if "singleton.lock_delay" not in values and "singleton.fence_timeout" not in values:
        return None
    from foundation_cli.errors import FoundationError

    base = Timing()
    fence = values.get("singleton.fence_timeout", base.fence_timeout)
    try:
        Timing(
            lock_delay=values.get("singleton.lock_delay", base.lock_delay),
            fence_timeout=fence,
            confirm_interval=min(base.confirm_interval, fence / 4),
            confirm_request_timeout=min(base.confirm_request_timeout, fence * 0.66),
        ).check()
    except FoundationError as exc:
        return exc.message
    return None


class LiveSettings:
    """Thread-safe current values of the agent-owned settings (parsed), with the config version they came from."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, Any] = {}
        self._versions: dict[str, int] = {}
        self._listeners: list[Callable[[str, Any], None]] = []

    def get(self, key: str, default: Any = None) -> Any:
        """The live value of ``key`` (parsed: seconds as float, level as str) or ``default`` if unset."""
        with self._lock:
            return self._values.get(key, default)

    def version(self, key: str) -> int | None:
        with self._lock:
            return self._versions.get(key)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._values)

    def subscribe(self, listener: Callable[[str, Any], None]) -> None:
        """Call ``listener(key, value)`` after a setting changes (``value`` ``None`` when unset)."""
        with self._lock:
            self._listeners.append(listener)

    def set(self, key: str, value: Any, version: int) -> bool:
        """Store a parsed value; run its apply hook and listeners if it changed. Returns whether it changed."""
        with self._lock:
            changed = self._values.get(key, object()) != value
            self._values[key] = value
            self._versions[key] = version
            listeners = list(self._listeners)
        if changed:
            setting = OWNED.get(key)
            if setting and setting.apply:
                setting.apply(value)
            for listener in listeners:
                listener(key, value)
        return changed

    def unset(self, key: str) -> None:
        with self._lock:
            existed = key in self._values
            self._values.pop(key, None)
            self._versions.pop(key, None)
            listeners = list(self._listeners)
        if existed:
            if key == "agent.log_level":
                _apply_log_level("info")
            for listener in listeners:
                listener(key, None)

    def clear(self) -> None:
        """Forget everything (tests)."""
        with self._lock:
            self._values.clear()
            self._versions.clear()


LIVE = LiveSettings()
