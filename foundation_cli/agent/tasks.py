"""Registry of agent tasks. Each feature adds its task here, in its own module.

A task is ``run(ctx, stop)``: ``ctx`` is the :class:`foundation_cli.agent.context.AgentContext`
(node name, Consul client factory, settings, logger), ``stop`` a
``threading.Event`` set on SIGTERM. Tasks must use blocking queries rather
than polling, and must return within a few seconds of ``stop`` being set.
"""

from __future__ import annotations

from collections.abc import Callable

TASKS: list[tuple[str, str]] = [
    # (name, "module:function"), imported lazily by the agent runner.
    ("placement", "foundation_cli.agent.placement:run"),
    ("advertise", "foundation_cli.agent.advertise:run"),
    ("config-apply", "foundation_cli.agent.config_apply:run"),
    ("optimizer", "foundation_cli.agent.optimizer_task:run"),
    ("channels-gc", "foundation_cli.agent.channels_gc:run"),
    ("snapshots", "foundation_cli.agent.snapshot_task:run"),
    ("memory-guard", "foundation_cli.agent.memory_guard:run"),
]

# Tasks the agent waits for on stop (they stop processes, release locks). The others are left after a
# short grace: whatever they write is atomic, and a blocking read has nothing to finish.
FINISH_ON_STOP = frozenset({"placement"})


def load(spec: str) -> Callable:
    """Import ``module:function`` lazily."""
    import importlib

    module_name, func_name = spec.split(":", 1)
    return getattr(importlib.import_module(module_name), func_name)
