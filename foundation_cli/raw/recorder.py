"""Where adapters record raw operations, and where ``--explain`` listens.

One :class:`Recorder` is active per command run (a context variable, so tests
and threads each see the right one). Adapters call :meth:`Recorder.begin` as an
operation leaves the program and :meth:`Recorder.add` with its outcome (so
``--explain`` can show operations in the order they were sent); in dry-run mode
they ask :attr:`Recorder.dry_run` and stop before the wire, recording the
operation as it would have been sent.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator

from foundation_cli.raw.operation import RawOperation

Listener = Callable[[RawOperation], None]
STALLED = 600.0  # seconds after which an unanswered request stops holding back later ones (> any timeout)


class Recorder:
    """Collects the raw operations of one command run; thread-safe.

    Listeners (``--explain``) get each operation once, complete, in the order the operations
    were *sent*, also when several threads send at once: an adapter calls :meth:`begin` as
    the request leaves and :meth:`add` when its answer is in; an answer that comes back
    before an earlier request's is held until that one is in. An operation never begun is
    placed when it is added. A blocking query (:attr:`RawOperation.is_long_poll`) holds
    nothing back: it is shown when it returns. Listeners are called one at a time, so
    their output never interleaves.
    """

    def __init__(self, *, dry_run: bool = False) -> None:
        self.dry_run = dry_run
        self.operations: list[RawOperation] = []
        self._listeners: list[Listener] = []
        self._lock = threading.RLock()
        self._in_flight: list[RawOperation] = []  # begun (and later ones added), in send order, until shown
        self._done: set[int] = set()  # ids of in-flight operations whose answer is in
        self._ready: list[RawOperation] = []  # to show, in order (filled under the lock, shown after)
        self._showing = False

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every operation once it is complete, in send order (``--explain``)."""
        self._listeners.append(listener)

    def begin(self, op: RawOperation) -> RawOperation:
        """Note that ``op`` is being sent now: operations sent later are shown after it."""
        if op.is_long_poll or not self._listeners:  # nobody watching: nothing to order
            return op
        with self._lock:
            if not any(o is op for o in self._in_flight):
                # Threads may call begin a moment apart from making the request: order by its stamp.
                at = len(self._in_flight)
                while at and self._in_flight[at - 1].started > op.started:
                    at -= 1
                self._in_flight.insert(at, op)
        return op

    def add(self, op: RawOperation) -> RawOperation:
        """Store a completed operation and show it to listeners (once everything sent before it is in)."""
        with self._lock:
            self.operations.append(op)
            if any(o is op for o in self._in_flight):
                self._done.add(id(op))
            elif self._in_flight and not op.is_long_poll:
                # Never begun: sent now, so it queues behind what is still in flight.
                self._in_flight.append(op)
                self._done.add(id(op))
            else:
                self._ready.append(op)
            # A head that never comes back (an adapter path that raised past its record) holds
            # nothing back for ever: past STALLED seconds it loses its place (shown if it ever returns).
            now = time.time()
            while self._in_flight and (
                id(self._in_flight[0]) in self._done or now - self._in_flight[0].started > STALLED
            ):
                head = self._in_flight.pop(0)
                if id(head) in self._done:
                    self._done.discard(id(head))
                    self._ready.append(head)
        self._show()
        return op

    def flush(self) -> None:
        """Show every completed operation still held (end of a run: an earlier one never came back)."""
        with self._lock:
            for op in self._in_flight:
                if id(op) in self._done:
                    self._ready.append(op)
            self._in_flight = [op for op in self._in_flight if id(op) not in self._done]
            self._done.clear()
        self._show()

    def _show(self) -> None:
        # One thread shows at a time, in queue order; others leave their operations in the queue.
        with self._lock:
            if self._showing:
                return
            self._showing = True
        try:
            while True:
                with self._lock:
                    if not self._ready:
                        self._showing = False
                        return
                    op = self._ready.pop(0)
                    listeners = list(self._listeners)
                for listener in listeners:
                    listener(op)
        except BaseException:
            with self._lock:
                self._showing = False
            raise

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
        recorder.flush()


def set_process_recorder(recorder: Recorder) -> Recorder:
    """Install ``recorder`` for every thread of this process (CLI entry, worker threads).

    Returns the one it replaces, so a caller can put it back when its run ends.
    """
    global _fallback
    previous, _fallback = _fallback, recorder
    return previous
