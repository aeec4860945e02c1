"""Agent task: keep the node agent within its memory bound, by restarting it when it grows past it.

The bound is on the agent's own resident memory (``VmRSS`` in ``/proc/self/status``):
``FOUNDATION_AGENT_MEMORY_MAX`` MiB (default :data:`DEFAULT_MAX_MB`; ``0`` turns the
guard off; set it with ``agent.env`` in foundation.yaml). The task looks at it
when the agent starts and every :data:`CHECK_EVERY` seconds; above the bound it logs an
error and stops the agent the ordinary way (as SIGTERM would) with exit status
:data:`EXIT_OVER_BOUND`, so whatever supervises it starts a fresh one: systemd
(``Restart=on-failure``) or the supervising loop ``foundation up`` uses on hosts without
systemd. A leak then costs one agent restart, not the node — and, as any ordinary stop,
the instances it ran on this node: its singletons are released at once (another node
takes them), the fresh agent starts the replicated ones again.

Why not systemd's ``MemoryMax=`` on the agent's unit: the services the agent runs are its
children and stay in its cgroup, so a unit limit would cap them too, and the kernel's OOM
killer would choose among them. This guard works the same on hosts with and without
systemd. It is a watchdog, not a hard cap: growth between two looks (10 s) is not stopped
mid-way, and memory Python has freed but kept (it rarely gives it back) counts.

Why 256 MB: the agent measured 33 MB idle and at most 44 MB running 200 services on 5
nodes (bench/load.py, docs/reliability.md): 256 MB is ~6x that, room for a scheduled
snapshot held in memory once (a small cluster's is kilobytes to a few megabytes) and for
a burst, yet small against the 1–8 GB of the machines Foundation is for.
"""

from __future__ import annotations

import os
import threading

DEFAULT_MAX_MB = 256
CHECK_EVERY = 10.0
EXIT_OVER_BOUND = 75  # EX_TEMPFAIL: "try again" (a restart), distinct from a crash (1) or bad usage (2)
ENV = "FOUNDATION_AGENT_MEMORY_MAX"


def memory_of(pid: int | str = "self") -> dict[str, int]:
    """``VmRSS`` (now) and ``VmHWM`` (the peak since start) of a process, in bytes ({} if unreadable)."""
    out = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                name, _, value = line.partition(":")
                if name in ("VmRSS", "VmHWM"):
                    out[name] = int(value.split()[0]) * 1024  # kB
    except (OSError, ValueError, IndexError):
        return {}
    return out


def bound_mb(env: dict[str, str] | None = None) -> tuple[int, str | None]:
    """The bound in MiB (0: off) and, when the setting is unusable, why the default is used instead."""
    raw = (os.environ if env is None else env).get(ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_MB, None
    try:
        value = int(raw)
    except ValueError:
        return DEFAULT_MAX_MB, f"{ENV}={raw!r} is not a whole number of MiB"
    if value < 0:
        return DEFAULT_MAX_MB, f"{ENV}={raw!r} is negative"
    return value, None


def check(bound: int, rss: int | None) -> bool:
    """Whether ``rss`` (bytes) is over ``bound`` (MiB; 0 never is)."""
    return bool(bound) and rss is not None and rss > bound * 1024 * 1024


def run(ctx, stop: threading.Event, *, every: float = CHECK_EVERY) -> None:
    """Task entry point (see :mod:`foundation_cli.agent.tasks`)."""
    bound, problem = bound_mb()
    if problem:
        ctx.logger.warning("%s; using %d MiB", problem, bound)
    if not bound:
        ctx.logger.info("memory guard off (%s=0)", ENV)
        return
    ctx.logger.info("memory bound %d MiB (%s); RSS now %s", bound, ENV, _mib(memory_of().get("VmRSS")))
    while True:
        mem = memory_of()
        if check(bound, mem.get("VmRSS")):
            ctx.logger.error(
                "agent RSS %s is over its bound of %d MiB (%s): stopping with exit status %d to be restarted",
                _mib(mem.get("VmRSS")),
                bound,
                ENV,
                EXIT_OVER_BOUND,
            )
            ctx.extra["exit_code"] = EXIT_OVER_BOUND
            stop.set()
            return
        if stop.wait(every):
            return


def _mib(value: int | None) -> str:
    return "unknown" if value is None else f"{value / (1024 * 1024):.1f} MiB"
