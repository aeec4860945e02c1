"""Agent task: run the optimizer periodically and keep the last report at ``foundation/optimizer/last``.

Only one node does it: the node whose local Consul agent is the current Raft
leader (every other agent sees a different leader address and skips the
round), so a cluster stores one report per interval without a lock. The
interval is the cluster-wide config key ``optimizer.interval`` (a duration,
default 1h, read each round), else ``FOUNDATION_OPTIMIZER_INTERVAL``.
``foundation optimize --last`` shows the stored report.
"""

from __future__ import annotations

import os
import threading
import time

from foundation_cli.core import durations, keys

DEFAULT_INTERVAL = 3600.0
MIN_INTERVAL = 10.0
FIRST_DELAY = 30.0  # let the agent settle (sessions, service registration) before the first round
WINDOW = 5.0  # observation window of each round (kept short: the task must stop within seconds)
INTERVAL_KEY = "optimizer.interval"


def interval(client, env: dict[str, str] | None = None) -> float:
    """Seconds between rounds: cluster-wide ``optimizer.interval``, else the environment, else an hour."""
    env = os.environ if env is None else env
    text = None
    try:
        _index, entry = client.kv.get(keys.CONFIG + INTERVAL_KEY, consistency="stale")
        if entry and entry.get("Value") is not None:
            text = (
                entry["Value"].decode("utf-8", "replace") if isinstance(entry["Value"], bytes) else str(entry["Value"])
            )
    except Exception:  # noqa: BLE001 - a missing/unreadable key means the default
        text = None
    text = text or env.get("FOUNDATION_OPTIMIZER_INTERVAL")
    if not text:
        return DEFAULT_INTERVAL
    try:
        return max(MIN_INTERVAL, durations.parse(text.strip()))
    except ValueError:
        return DEFAULT_INTERVAL


def is_leader_agent(client) -> bool:
    """Whether the local agent is a server and the current Raft leader (the one node that runs the optimizer)."""
    me = client.agent.self()
    member = me.get("Member") or {}
    tags = member.get("Tags") or {}
    if tags.get("role") != "consul":
        return False
    address = f"{member.get('Addr')}:{tags.get('port')}"
    return client.status.leader() == address


def run_once(ctx, *, window: float = WINDOW, force: bool = False, monitor=None) -> dict | None:
    """One round: if this node is the leader's (or ``force``), evaluate and store the report; return it.

    ``monitor`` is kept by :func:`run` across rounds, so check history (flapping) spans rounds; the
    findings that are new, changed or gone since the stored report are announced on ``_optimizer``.
    """
    import json

    from foundation_cli.core import optimizer, optimizer_announce
    from foundation_cli.core.health_monitor import monitor_for

    client = ctx.consul()
    if not force and not is_leader_agent(client):
        return None
    monitor = monitor or monitor_for(ctx.settings, recorder=ctx.recorder)
    report = optimizer.evaluate(monitor.snapshot(window=window))
    data = optimizer.stored_report(report, node=ctx.node)
    previous = None
    try:
        _i, entry = client.kv.get(keys.OPTIMIZER_LAST)
        previous = json.loads(entry["Value"]) if entry and entry.get("Value") else None
    except (ValueError, TypeError):
        previous = None
    changes = optimizer_announce.diff(previous, json.loads(data))
    if not client.kv.put(keys.OPTIMIZER_LAST, data):
        raise RuntimeError("storing the optimizer report failed")
    if optimizer_announce.has_news(changes):
        optimizer_announce.announce(client, ctx.node, optimizer_announce.message(changes, report.counts()))
        ctx.logger.info("optimizer: announced on %s: %s", keys.OPTIMIZER_CHANNEL, optimizer_announce.summary(changes))
    ctx.logger.info(
        "optimizer: %s stored at %s",
        ", ".join(f"{n} {k}" for k, n in report.counts().items()),
        keys.OPTIMIZER_LAST,
    )
    return json.loads(data)


def run(ctx, stop: threading.Event) -> None:
    """Task entry point (see :mod:`foundation_cli.agent.tasks`)."""
    delay = float(os.environ.get("FOUNDATION_OPTIMIZER_DELAY", FIRST_DELAY))
    if stop.wait(max(0.0, delay)):
        return
    from foundation_cli.core.health_monitor import monitor_for

    failures = 0
    monitor = monitor_for(ctx.settings, recorder=ctx.recorder)  # one for all rounds: its check history carries
    while not stop.is_set():
        started = time.monotonic()
        wait = DEFAULT_INTERVAL
        try:
            client = ctx.consul()
            wait = interval(client)
            monitor.history_s = max(600.0, min(2 * wait, 86400.0))
            run_once(ctx, window=float(os.environ.get("FOUNDATION_OPTIMIZER_WINDOW", WINDOW)), monitor=monitor)
            failures = 0
        except Exception as exc:  # noqa: BLE001 - ride through elections and restarts; try again later
            if failures == 0:
                ctx.logger.warning("optimizer round failed (%s); retrying", getattr(exc, "message", None) or exc)
            failures += 1
            wait = min(wait, 30.0 * failures)
        stop.wait(max(1.0, wait - (time.monotonic() - started)))
