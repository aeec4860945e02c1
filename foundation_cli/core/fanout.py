"""Work on many hosts at once: a bounded thread pool whose threads run in the caller's context
(the recorder of ``--explain`` and the progress printer are context variables)."""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any


def in_context(pool: ThreadPoolExecutor, fn: Callable[..., Any], *args: Any) -> Future:
    """``pool.submit(fn, *args)``, run in a copy of the caller's context."""
    ctx = contextvars.copy_context()
    return pool.submit(ctx.run, fn, *args)


def for_each(items: list, fn: Callable[[Any], None], *, parallel: int) -> None:
    """``fn(item)`` for every item in a pool of at most ``parallel`` threads; the first error is raised
    once every item was worked on. Ctrl-C returns at once: no item starts after it, and the caller
    does not wait for the running ones (their own connections end them)."""
    if not items:
        return
    pool = ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items))))
    interrupted = False
    try:
        for f in [in_context(pool, fn, item) for item in items]:
            f.result()
    except KeyboardInterrupt:
        interrupted = True
        raise
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=interrupted)
