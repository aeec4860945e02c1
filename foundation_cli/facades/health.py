"""Health and optimizer operations for the commands: snapshot, evaluate, apply-and-confirm, last stored report."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import Any

from foundation_cli.core import keys
from foundation_cli.errors import NotFoundError, UsageError

MAX_WINDOW = 600.0


def check_window(window: float) -> float:
    if window != window or window < 0 or window > MAX_WINDOW:  # NaN, negative, absurd
        raise UsageError(f"invalid --window {window!r}: expected seconds between 0 and {MAX_WINDOW:g}")
    return window


def monitor(run):
    """A HealthMonitor reading through this run's recording client."""
    from foundation_cli.core.health_monitor import monitor_for

    return monitor_for(run.settings, recorder=run.recorder)


def snapshot(run, *, window: float, mon=None):
    from foundation_cli.errors import PermissionDeniedError, UnreachableError

    mon = mon or monitor(run)
    snap = mon.snapshot(window=check_window(window))
    if "HTTP 403" in snap.errors.get("self", ""):
        raise PermissionDeniedError(
            f"Consul at {snap.consul_addr} refused to show the agent (403)",
            hint="give a token with agent:read, node:read, service:read, operator:read (--token or CONSUL_HTTP_TOKEN)",
        )
    if "self" in snap.errors and "members" in snap.errors:
        raise UnreachableError(
            f"cannot read Consul at {snap.consul_addr}: {snap.errors['self']}",
            hint="is the agent running? set --consul-addr / CONSUL_HTTP_ADDR, or run `foundation up`",
        )
    return snap


def optimize(run, *, window: float):
    from foundation_cli.core import optimizer

    return optimizer.evaluate(snapshot(run, window=window))


def apply_and_confirm(run, report, *, only: list[str] | None = None, confirm_timeout: float = 20.0) -> dict[str, Any]:
    """Apply the live-safe recommendations, then re-read until each is gone (or the timeout passes)."""
    from foundation_cli.core import optimizer

    recs = optimizer.applicable(report, only)
    client = run.consul()
    applied = optimizer.apply(recs, client, addr=run.settings.consul_addr or report.consul_addr)
    result = {a.id: {**asdict(a), "confirmed": None} for a in applied}
    if run.recorder.dry_run:
        for item in result.values():
            item["status"] = "dry-run"
        return {"applied": list(result.values()), "report": report}
    pending = {a.id for a in applied if a.status == "applied"}
    latest = report
    deadline = time.monotonic() + confirm_timeout
    mon = monitor(run)
    while pending:
        latest = optimizer.evaluate(snapshot(run, window=0.0, mon=mon))
        present = {r.id for r in latest.recommendations}
        for rid in list(pending):
            if rid not in present:
                result[rid]["confirmed"] = True
                pending.discard(rid)
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    for rid in pending:
        result[rid]["confirmed"] = False
    return {"applied": list(result.values()), "report": latest}


def last_report(run) -> dict[str, Any]:
    """The report the node agents' optimizer task stored last (``foundation/optimizer/last``)."""

    client = run.consul()
    _index, entry = client.kv.get(keys.OPTIMIZER_LAST)
    if not entry or entry.get("Value") is None:
        raise NotFoundError(
            f"no stored optimizer report at {keys.OPTIMIZER_LAST}",
            hint="the node agents store one every hour (optimizer task); run `foundation optimize` now instead",
        )
    try:
        return json.loads(entry["Value"])
    except ValueError:
        raise NotFoundError(f"the value at {keys.OPTIMIZER_LAST} is not an optimizer report") from None
