"""What changed between two optimizer rounds, announced on the ``_optimizer`` channel.

The leader's agent compares the report it just made with the one stored at
``foundation/optimizer/last`` (the previous round, whoever ran it) and, when a
finding is new, changed severity/title, or is gone, sends one message on the
channel ``_optimizer`` (``foundation listen _optimizer`` prints it): a Consul
user event ``foundation:_optimizer`` carrying a channel envelope, the full
envelope also kept in the channel's history (``listen --since``). An envelope
too large for an event is fired as a reference to that history copy, as
``broadcast`` does.
"""

from __future__ import annotations

import json
import time
from typing import Any

from foundation_cli.core import envelope as env_mod
from foundation_cli.core import keys

CHANNEL = keys.OPTIMIZER_CHANNEL


def _findings(report: dict | None) -> dict[str, dict]:
    out = {}
    for rec in (report or {}).get("recommendations") or []:
        if isinstance(rec, dict) and rec.get("id"):
            out[str(rec["id"])] = {
                "id": str(rec["id"]),
                "severity": rec.get("severity"),
                "title": rec.get("title"),
                "applies": rec.get("applies"),
            }
    return out


def diff(previous: dict | None, current: dict) -> dict[str, list]:
    """``new`` / ``changed`` findings (id, severity, title, applies) and ``resolved`` ids."""
    before, now = _findings(previous), _findings(current)
    new = [now[i] for i in sorted(now) if i not in before]
    changed = [
        now[i]
        for i in sorted(now)
        if i in before and (now[i]["severity"], now[i]["title"]) != (before[i]["severity"], before[i]["title"])
    ]
    resolved = sorted(i for i in before if i not in now)
    return {"new": new, "changed": changed, "resolved": resolved}


def has_news(changes: dict[str, list]) -> bool:
    return any(changes.get(k) for k in ("new", "changed", "resolved"))


def message(changes: dict[str, list], counts: dict[str, Any]) -> bytes:
    """The announcement's JSON: the changes and the report's counts (the report itself stays in KV)."""
    return json.dumps(
        {"kind": "optimizer", **changes, "counts": counts, "report": keys.OPTIMIZER_LAST},
        separators=(",", ":"),
        sort_keys=True,
    ).encode("utf-8")


def summary(changes: dict[str, list]) -> str:
    """One line for logs and ``status``: ``2 new (…), 1 resolved``."""
    parts = []
    for kind in ("new", "changed"):
        items = changes.get(kind) or []
        if items:
            names = ", ".join(f"{i['severity']} {i['id']}" for i in items[:3]) + (" …" if len(items) > 3 else "")
            parts.append(f"{len(items)} {kind} ({names})")
    if changes.get("resolved"):
        parts.append(f"{len(changes['resolved'])} resolved")
    return ", ".join(parts) or "no change"


def announce(client, node: str, data: bytes, *, now: float | None = None) -> str:
    """Keep the envelope in the channel history and fire it (inline, or as a reference); its id."""
    now = time.time() if now is None else now
    full = env_mod.Envelope(id=env_mod.new_id(now), time=now, sender=node, content_type="application/json", data=data)
    wire = full.to_wire()
    client.kv.put(env_mod.channel_key(CHANNEL, "history", full.id), wire)
    if len(wire) > env_mod.inline_budget(CHANNEL):
        wire = full.as_reference("history").to_wire()
    client.event.fire(env_mod.event_name(CHANNEL), wire)
    return full.id
