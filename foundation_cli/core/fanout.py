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
    once every item was worked on."""
    if not items:
        return
    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(items)))) as pool:
        for f in [in_context(pool, fn, item) for item in items]:
            f.result()
