"""Agent task: sweep spilled channel payloads older than the retention period.

A broadcaster that spills deletes old copies on its own channel; a channel
nobody spills on any more would keep its last copies forever, so the agent
whose local Consul is the Raft leader (one node, no lock needed) sweeps every
channel every :data:`INTERVAL` seconds. Other agents skip the round.
"""

from __future__ import annotations

import threading

INTERVAL = 300.0
FIRST_DELAY = 60.0


def sweep(ctx) -> list[str]:
    """One round: on the leader's node, delete expired blobs; returns the deleted keys."""
    from foundation_cli.agent.optimizer_task import is_leader_agent
    from foundation_cli.core.channel_gc import collect_garbage

    client = ctx.consul()
    if not is_leader_agent(client):
        return []
    deleted = collect_garbage(client)
    if deleted:
        ctx.logger.info("channels: deleted %d expired payload copies", len(deleted))
    return deleted


def run(ctx, stop: threading.Event) -> None:
    """Task entry point: ``ctx`` needs ``.consul()`` and ``.logger``."""
    delay = FIRST_DELAY
    while not stop.wait(delay):
        delay = INTERVAL
        try:
            sweep(ctx)
        except Exception as exc:  # noqa: BLE001 - next round will try again
            ctx.logger.warning("channels sweep failed: %s", getattr(exc, "message", None) or exc)
