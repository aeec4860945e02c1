"""Agent task: scheduled Consul snapshots, taken by the Raft leader's agent, rotated (core/snapshots.py).

Off until the cluster-wide ``snapshot.interval`` is set (``foundation config
set snapshot.interval 1h --cluster-wide``); ``snapshot.keep`` (default 24)
bounds how many are kept. Each round, the agent whose local Consul is the
leader takes a snapshot when the newest one in the index is older than the
interval — so the schedule survives leader changes — stores it under its
node directory and writes the index entry; then it prunes the index to
``keep``. Every agent removes its own files that lost their index entry.
``GET /v1/snapshot`` needs a token allowed to take snapshots (with ACLs: a
management token, or ``acl = "write"``): without one the round logs the 403
and tries again next round.
"""

from __future__ import annotations

import threading
import time

from foundation_cli.agent.optimizer_task import is_leader_agent
from foundation_cli.core import keys, snapshots
from foundation_cli.core.live_settings import LIVE

CHECK_EVERY = 30.0  # how often the schedule is looked at (the interval itself is ≥ 10 s)


def run_once(ctx, client, *, now: float | None = None) -> snapshots.SnapshotEntry | None:
    """One round: maybe take a snapshot (leader only), prune the index, drop this node's orphan files."""
    now = time.time() if now is None else now
    interval = float(LIVE.get(snapshots.INTERVAL_KEY, 0.0) or 0.0)
    keep = int(LIVE.get(snapshots.KEEP_KEY, snapshots.DEFAULT_KEEP))
    directory = ctx.node_dir() / "snapshots"
    _i, items = client.kv.get(keys.SNAPSHOTS, recurse=True)
    current = snapshots.entries(items)
    taken = None
    if interval > 0 and is_leader_agent(client):
        newest = current[-1].taken if current else 0.0
        if now - newest >= interval:
            archive = client.snapshot.save()
            snap_id = snapshots.snapshot_id(now)
            path = snapshots.write_file(directory, snap_id, archive)
            taken = snapshots.entry_for(snap_id, ctx.node, path, archive, now, None)
            client.kv.put(keys.SNAPSHOTS + snap_id, snapshots.index_value(taken))
            current = [e for e in current if e.id != snap_id] + [taken]
            ctx.logger.info("snapshot %s taken (%d bytes) at %s", snap_id, len(archive), path)
        for old in snapshots.to_prune(current, keep):
            client.kv.delete(keys.SNAPSHOTS + old.id)
            current.remove(old)
            ctx.logger.info("snapshot %s rotated out (keep %d)", old.id, keep)
    for orphan in snapshots.orphan_files(directory, ctx.node, current):
        orphan.unlink(missing_ok=True)
    return taken


def run(ctx, stop: threading.Event) -> None:
    """Task entry point (see :mod:`foundation_cli.agent.tasks`)."""
    failures = 0
    while not stop.is_set():
        wait = CHECK_EVERY
        interval = float(LIVE.get(snapshots.INTERVAL_KEY, 0.0) or 0.0)
        if interval > 0:
            wait = min(CHECK_EVERY, max(1.0, interval / 4))
            try:
                run_once(ctx, ctx.consul())
                failures = 0
            except Exception as exc:  # noqa: BLE001 - elections, 403 without a snapshot token: next round
                if failures == 0:
                    ctx.logger.warning("scheduled snapshot failed (%s); retrying", getattr(exc, "message", None) or exc)
                failures += 1
        stop.wait(wait)
