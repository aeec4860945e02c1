"""Agent task: apply cluster-wide config live and report what was applied.

Watches ``foundation/config/`` with blocking queries (so a change reaches
every agent within one round trip, and a missed control-channel event does
not matter), parses the keys the agents own into
:data:`foundation_cli.core.live_settings.LIVE`, and writes
``foundation/config-status/<node>``::

    {"node": "n1", "index": 812, "values": {"agent.log_level": 811, …},
     "applied": {"agent.log_level": "debug"}, "rejected": {}, "time": 1764290000.1}

``index`` is the KV index of the config tree this agent has processed: a key
whose version (ModifyIndex) is ≤ ``index`` has been applied, unless it is
listed in ``rejected`` (bad value, or an unsafe timing combination; the
previous value stays live).
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from foundation_cli.core import keys, live_settings
from foundation_cli.core.live_settings import LIVE, LiveSettings
from foundation_cli.core.retry import backoff

WAIT = "5s"  # blocking-query wait: bounds how long stop takes to be noticed


def apply_items(items: list[dict] | None, settings: LiveSettings = LIVE) -> tuple[dict, dict, dict]:
    """Apply a recursive read of the config prefix: returns (versions, applied, rejected)."""
    versions: dict[str, int] = {}
    texts: dict[str, str] = {}
    for item in items or []:
        key = item["Key"][len(keys.CONFIG) :]
        if not key:
            continue
        versions[key] = int(item.get("ModifyIndex") or 0)
        texts[key] = (item.get("Value") or b"").decode("utf-8", "replace")
    parsed: dict[str, Any] = {}
    rejected: dict[str, str] = {}
    for key in live_settings.OWNED:
        if key not in texts:
            continue
        try:
            parsed[key] = live_settings.validate(key, texts[key])
        except ValueError as exc:
            rejected[key] = f"invalid value {texts[key]!r}: {exc}"
    problem = live_settings.check_timing(
        {k: v for k, v in parsed.items() if k in ("singleton.lock_delay", "singleton.fence_timeout")}
    )
    if problem:
        for key in ("singleton.lock_delay", "singleton.fence_timeout"):
            if key in parsed:
                rejected[key] = problem
                parsed.pop(key)
    for key in live_settings.OWNED:
        if key in parsed:
            settings.set(key, parsed[key], versions[key])
        elif key not in texts:
            settings.unset(key)
    applied = {k: texts[k] for k in parsed}
    return versions, applied, rejected


def _node(ctx) -> str:
    return getattr(ctx, "node", None) or getattr(ctx, "node_name", None) or "unknown"


def run(ctx, stop: threading.Event) -> None:
    """Task entry point: ``ctx`` needs ``.node``, ``.consul()`` and ``.logger``."""

    logger = ctx.logger
    node = _node(ctx)
    client = ctx.consul()
    index: Any = None
    reported: Any = None
    last_signature: Any = None
    failures = 0
    while not stop.is_set():
        try:
            new_index, items = client.kv.get(keys.CONFIG, recurse=True, index=index, wait=WAIT)
            if index is not None and new_index is not None and int(new_index) < int(index):
                new_index = None  # the index went backwards (snapshot restore): start over
            index = new_index
            if index is not None and index == reported:
                continue
            versions, applied, rejected = apply_items(items)
            signature = (versions, applied, rejected)
            if signature == last_signature:
                # Nothing under the prefix changed: an empty prefix reports the whole KV table's
                # index, so our own status write below would otherwise wake this watch forever.
                reported = index
                continue
            status = {
                "node": node,
                "index": int(index or 0),
                "values": versions,
                "applied": applied,
                "rejected": rejected,
                "time": round(time.time(), 3),
            }
            client.kv.put(keys.CONFIG_STATUS + node, json.dumps(status, sort_keys=True))
            if applied or rejected:
                logger.info(
                    "config applied at index %s: %s%s", index, applied, f" rejected {rejected}" if rejected else ""
                )
            for key, reason in rejected.items():
                logger.warning("config %s rejected: %s", key, reason)
            reported = index
            last_signature = signature
            failures = 0
        except Exception as exc:  # noqa: BLE001 - ride through leader elections and agent restarts
            if failures == 0:
                logger.warning("config watch failed (%s); retrying", getattr(exc, "message", None) or exc)
            failures += 1
            index = None
            stop.wait(backoff(failures))
