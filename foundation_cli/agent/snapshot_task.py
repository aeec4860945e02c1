"""Agent task: scheduled Consul snapshots, taken by the Raft leader's agent, rotated (core/snapshots.py).

Off until the cluster-wide ``snapshot.interval`` is set (``foundation config
set snapshot.interval 1h --cluster-wide``); ``snapshot.keep`` (default 24)
bounds how many are kept. Each round, the agent whose local Consul is the
leader takes a snapshot when the newest one in the index is older than the
interval — so the schedule survives leader changes — stores it under its
node directory and writes the index entry; then it prunes the index to
``keep``. Every agent removes its own files that lost their index entry.
``GET /v1/snapshot`` needs ``acl = "write"`` in Consul 1.8 (its docs: a
management token), which the agent's own token does not have. ``foundation
up`` puts a separate snapshot token on **server hosts only**
(``/etc/foundation/snapshot.token``, 0600 root; ``FOUNDATION_SNAPSHOT_TOKEN_FILE``
names another file), and the agent uses it for the snapshot and its index
entries only (its own policy cannot write ``foundation/snapshots/``); the leader
is always a server, so a client never needs it (docs/security.md says why that
adds nothing root on a server does not already have). Without the file the
calls go with the agent's token, and the 403 is logged once with what to do.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path

from foundation_cli.agent.optimizer_task import is_leader_agent
from foundation_cli.core import keys, snapshots
from foundation_cli.core.bootstrap import SNAPSHOT_TOKEN_FILE
from foundation_cli.core.live_settings import LIVE
from foundation_cli.errors import PermissionDeniedError

CHECK_EVERY = 30.0  # how often the schedule is looked at (the interval itself is ≥ 10 s)
TOKEN_FILE_ENV = "FOUNDATION_SNAPSHOT_TOKEN_FILE"


def token_file() -> Path:
    return Path(os.environ.get(TOKEN_FILE_ENV) or SNAPSHOT_TOKEN_FILE)


def snapshot_token() -> str | None:
    """The snapshot token from its file (read each round: a token `up` places later works at once)."""
    try:
        return token_file().read_text().strip() or None
    except OSError:
        return None


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
        writer = _snapshot_client(ctx, client)
        newest = current[-1].taken if current else 0.0
        if now - newest >= interval:
            archive = writer.snapshot.save()
            snap_id = snapshots.snapshot_id(now)
            path = snapshots.write_file(directory, snap_id, archive)
            taken = snapshots.entry_for(snap_id, ctx.node, path, archive, now, None)
            writer.kv.put(keys.SNAPSHOTS + snap_id, snapshots.index_value(taken))
            current = [e for e in current if e.id != snap_id] + [taken]
            ctx.logger.info("snapshot %s taken (%d bytes) at %s", snap_id, len(archive), path)
        for old in snapshots.to_prune(current, keep):
            writer.kv.delete(keys.SNAPSHOTS + old.id)
            current.remove(old)
            ctx.logger.info("snapshot %s rotated out (keep %d)", old.id, keep)
    for orphan in snapshots.orphan_files(directory, ctx.node, current):
        orphan.unlink(missing_ok=True)
    return taken


def _snapshot_client(ctx, client):
    """A client with the snapshot token (for the snapshot and its index only), else ``client`` itself.

    The index under ``foundation/snapshots/`` is written with the snapshot token too: the node agents'
    own policy cannot write there, so a compromised client node cannot plant an entry that
    ``snapshot save --from-scheduled`` would fetch and someone might restore.
    """
    token = snapshot_token()
    if token is None:
        return client
    from foundation_cli.tools import consul as consul_tool

    settings = dataclasses.replace(ctx.settings, token=token)
    return consul_tool.connect(settings, recorder=ctx.recorder, timeout=120, failover=False)


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
                    ctx.logger.warning("scheduled snapshot failed (%s); retrying%s", _why(exc), _hint(exc))
                failures += 1
        stop.wait(wait)


def _why(exc: Exception) -> str:
    return str(getattr(exc, "message", None) or exc)


def _hint(exc: Exception) -> str:
    if not isinstance(exc, PermissionDeniedError):
        return ""
    if snapshot_token() is None:
        return f" (no snapshot token in {token_file()}: run `foundation up` to place it on the servers)"
    return f" (the snapshot token in {token_file()} was refused: run `foundation up` to renew it)"
