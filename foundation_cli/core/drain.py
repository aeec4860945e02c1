"""Drain: the mark, and what the node's own agent does with it (agent/placement.py).

``foundation drain NODE`` only writes the mark ``foundation/drain/<node>``
(JSON: reason, by, since). The agent of that node watches the marks (a
blocking query, like specs and locks) and, while its mark exists:

- treats every spec as not placed here: it stops each instance gracefully
  (SIGTERM, SIGKILL after the stop grace) and releases a singleton's lock the
  moment its process is gone — a *released* lock is free at once (Consul's
  lock-delay applies only to a lock whose session was invalidated), and the
  other agents, blocked on the lock prefix, acquire it immediately;
- puts its own node into Consul maintenance (``PUT /v1/agent/maintenance``
  on its local agent: a node check ``_node_maintenance``, critical, so
  discovery and ``?passing`` queries skip the node). The node's agent does it
  itself, so it works with ACLs (its token may write its own node) and
  through any network layout.

Deleting the mark (``foundation undrain``) reverses both. The mark lives in
KV, so it survives agent restarts and ``foundation up``.
"""

from __future__ import annotations

import json
import time

from foundation_cli.core import keys

MAINT_CHECK = "_node_maintenance"
REASON_PREFIX = "foundation drain"


def mark_key(node: str) -> str:
    return keys.DRAIN + node


def mark_body(reason: str | None, by: str | None = None, now: float | None = None) -> str:
    return json.dumps(
        {"reason": reason or "", "by": by or "", "since": round(now if now is not None else time.time(), 3)},
        sort_keys=True,
    )


def maintenance_reason(mark: dict | None) -> str:
    reason = (mark or {}).get("reason") or ""
    return f"{REASON_PREFIX}: {reason}" if reason else REASON_PREFIX


def parse_mark(value: bytes | str | None) -> dict:
    """The mark's JSON (a hand-written non-JSON mark still drains: its text is the reason)."""
    if value is None:
        return {}
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
    try:
        data = json.loads(text)
    except ValueError:
        return {"reason": text}
    return data if isinstance(data, dict) else {"reason": text}


def set_maintenance(client, enable: bool, reason: str) -> None:
    """``PUT /v1/agent/maintenance?enable=…&reason=…`` on this node's own Consul agent."""
    client.agent.maintenance(enable, reason=reason if enable else None)


def ours_in_maintenance(client) -> bool:
    """Whether this node is in maintenance *set by a drain* (a hand-set `consul maint` is left alone)."""
    checks = client.agent.checks() or {}
    check = checks.get(MAINT_CHECK) or {}
    return str(check.get("Notes") or "").startswith(REASON_PREFIX)
