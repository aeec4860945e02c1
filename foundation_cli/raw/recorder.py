"""Where adapters record raw operations, and where ``--explain`` listens.

One :class:`Recorder` is active per command run (a context variable, so tests
and threads each see the right one). Adapters call :meth:`Recorder.record`
around every operation they really perform; in dry-run mode they ask
:attr:`Recorder.dry_run` and stop before the wire, recording the operation as
it would have been sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator

from foundation_cli.raw.operation import RawOperation

Listener = Callable[[RawOperation], None]


class Recorder:
    """Collects the raw operations of one command run; thread-safe."""

    def __init__(self, *, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.operations: list[RawOperation] = []
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every operation as soon as it completes (``--explain``)."""
        self._listeners.append(listener)

    def add(self, op: RawOperation) -> RawOperation:
        """Store a completed operation and notify listeners."""
        with self._lock:
            self.operations.append(op)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(op)
        return op

    @property
    def writes(self) -> list[RawOperation]:
        return [op for op in self.operations if op.is_write]


_current: contextvars.ContextVar[Recorder | None] = contextvars.ContextVar("foundation_recorder", default=None)
_fallback = Recorder()


def current_recorder() -> Recorder:
    """The active recorder (a process-wide default when none was installed)."""
    return _current.get() or _fallback


@contextlib.contextmanager
def use_recorder(recorder: Recorder) -> Iterator[Recorder]:
    """Install ``recorder`` for the duration of a command run."""
    token = _current.set(recorder)
    try:
        yield recorder
    finally:
        _current.reset(token)


def set_process_recorder(recorder: Recorder) -> Recorder:
    """Install ``recorder`` for every thread of this process (CLI entry, worker threads).

    Returns the one it replaces, so a caller can put it back when its run ends.
    """
    global _fallback
    previous, _fallback = _fallback, recorder
    return previous
