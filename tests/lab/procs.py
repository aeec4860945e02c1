"""Process plumbing for the test lab: children that die with the test run, and guaranteed teardown.

Every lab object (a lab of network-namespace hosts, a Consul agent) registers
itself here; :func:`close_all` runs from fixture finalizers, ``atexit`` and
SIGTERM/SIGHUP, so a failing or interrupted run still leaves nothing behind.
Children are started with ``PR_SET_PDEATHSIG=SIGKILL``: if the test process is
killed outright they die with it, and the next lab start cleans the rest
(:mod:`tests.lab.slots`).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import signal
import subprocess
import threading
import time
from collections.abc import Sequence
from typing import Protocol

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)


def die_with_parent() -> None:
    """``preexec_fn``: the child gets SIGKILL when the (thread that started the) test process exits."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def run(argv: Sequence[str], *, check: bool = True, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """``subprocess.run`` with captured text output and a bounded time."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    proc = subprocess.run(list(argv), timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}): {(proc.stderr or proc.stdout or '').strip()}")
    return proc


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def kill_pids(pids: Sequence[int], *, timeout: float = 10.0) -> None:
    """SIGKILL ``pids`` and wait until they are dead (zombies count: their parents reap them)."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    pending = set(pids)
    while pending and time.monotonic() < deadline:
        for pid in list(pending):
            if not pid_alive(pid):
                pending.discard(pid)
        if pending:
            time.sleep(0.02)


def stop_process(proc: subprocess.Popen | None, *, timeout: float = 10.0) -> None:
    """Kill a Popen child and reap it."""
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=timeout)


class Closable(Protocol):
    def close(self) -> None: ...


_live: list[Closable] = []
_live_lock = threading.RLock()
_handlers_installed = False


def register(obj: Closable) -> None:
    """Track ``obj`` so :func:`close_all` tears it down if nothing else does."""
    _install_handlers()
    with _live_lock:
        _live.append(obj)


def unregister(obj: Closable) -> None:
    with _live_lock, contextlib.suppress(ValueError):
        _live.remove(obj)


def close_all() -> None:
    """Tear down every live lab object, newest first; never raises."""
    with _live_lock:
        objs = list(reversed(_live))
    for obj in objs:
        with contextlib.suppress(Exception):
            obj.close()


def _on_signal(signum, frame) -> None:  # pragma: no cover - exercised by killing a run
    close_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    global _handlers_installed
    if _handlers_installed:
        return
    _handlers_installed = True
    atexit.register(close_all)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            if signal.getsignal(sig) in (signal.SIG_DFL, None):
                signal.signal(sig, _on_signal)
