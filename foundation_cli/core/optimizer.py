"""Optimizer: rules over a HealthMonitor snapshot → recommendations with evidence, reasoning and the raw change.

Why: the operator should see not only *what* to tune but the numbers that
say so (each with the request that read it), the reasoning in plain words, and
the exact change (an API call, an agent config fragment, a CLI line), plus
whether it applies live or needs a (rolling) restart. Only live API changes
are ever applied by the tool itself (:func:`apply`), and every one goes
through the recording Consul client, so ``--explain`` and ``--dry-run`` show
exactly what is sent.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from foundation_cli.core.health_monitor import Snapshot, read_ref
from foundation_cli.core.rules import RULES, Change, Recommendation
from foundation_cli.errors import ConflictError, FoundationError
from foundation_cli.raw import render
from foundation_cli.raw.operation import RawOperation

SCHEMA_VERSION = 1
_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}

__all__ = ["Report", "evaluate", "apply", "Applied", "change_operation"]


@dataclass
class Report:
    generated_at: float
    consul_addr: str
    cluster_id: str | None
    datacenter: str | None
    node: str | None
    window_s: float
    recommendations: list[Recommendation]
    snapshot: Snapshot | None = None
    rule_errors: dict[str, str] = field(default_factory=dict)
    read_errors: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        out = {"critical": 0, "warning": 0, "info": 0}
        for rec in self.recommendations:
            out[rec.severity] += 1
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``optimize --json`` document (schema foundation_cli/schemas/optimize.json)."""
        reads = self.snapshot.reads if self.snapshot else {}
        return {
            "schema_version": SCHEMA_VERSION,
            "generated_at": round(self.generated_at, 3),
            "consul_addr": self.consul_addr,
            "cluster_id": self.cluster_id,
            "datacenter": self.datacenter,
            "node": self.node,
            "window_s": self.window_s,
            "counts": self.counts(),
            "recommendations": [recommendation_dict(r, reads, self.consul_addr) for r in self.recommendations],
            "rule_errors": dict(self.rule_errors),
            "read_errors": dict(self.read_errors),
        }


def change_operation(change: Change, addr: str) -> RawOperation:
    """The raw operation a change's API call is (what --apply sends; rendered as curl / consul CLI)."""
    return RawOperation(kind="consul-http", method=change.method, url=change.url(addr), body=change.body)


def _evidence_read(name: str | None, reads: dict[str, RawOperation]) -> dict[str, Any] | None:
    op = reads.get(name or "")
    if op is None:
        return None
    ref = read_ref(op) or {}
    ref["name"] = name
    ref["curl"] = render.curl(op)
    return ref


def recommendation_dict(rec: Recommendation, reads: dict[str, RawOperation], addr: str) -> dict[str, Any]:
    changes = []
    for c in rec.changes:
        item: dict[str, Any] = {"description": c.description, "nodes": list(c.nodes)}
        if c.is_api:
            op = change_operation(c, addr)
            item["api"] = {
                "method": c.method,
                "path": c.path,
                "url": op.url,
                "body": None if c.body is None else c.body.decode("utf-8", "replace"),
                "curl": render.curl(op),
            }
        if c.config:
            item["config"] = c.config
        cli = c.cli or (render.consul_cli(change_operation(c, addr)) if c.is_api else None)
        if cli:
            item["cli"] = cli
        changes.append(item)
    return {
        "id": rec.id,
        "rule": rec.rule,
        "severity": rec.severity,
        "title": rec.title,
        "reasoning": rec.reasoning,
        "evidence": [
            {"label": e.label, "value": _jsonable(e.value), "read": _evidence_read(e.read, reads)} for e in rec.evidence
        ],
        "changes": changes,
        "applies": rec.applies,
        "auto": rec.auto,
        "docs": list(rec.docs),
    }


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        return str(value)


def evaluate(snap: Snapshot) -> Report:
    """Run every registered rule over ``snap``; a rule that breaks is reported, never fatal."""
    recs: list[Recommendation] = []
    errors: dict[str, str] = {}
    order = {name: i for i, (name, _fn) in enumerate(RULES)}
    for name, fn in RULES:
        try:
            recs.extend(fn(snap))
        except Exception as exc:  # noqa: BLE001 - one bad rule must not hide the others
            errors[name] = f"{type(exc).__name__}: {exc}"
    recs.sort(key=lambda r: (_SEVERITY_ORDER[r.severity], order.get(r.rule, 99), r.id))
    return Report(
        generated_at=time.time(),
        consul_addr=snap.consul_addr,
        cluster_id=snap.cluster.cluster_id,
        datacenter=snap.cluster.datacenter,
        node=snap.cluster.agent_node,
        window_s=snap.window_s,
        recommendations=recs,
        snapshot=snap,
        rule_errors=errors,
        read_errors=dict(snap.errors),
    )


@dataclass
class Applied:
    id: str
    changes: list[str]
    status: str  # applied | dry-run | failed
    error: str | None = None


def applicable(report: Report, only: list[str] | None = None) -> list[Recommendation]:
    """Recommendations ``--apply`` may perform: API changes (live, or read at each agent's next session)."""
    out = [r for r in report.recommendations if r.auto and r.applies in ("live", "next-session")]
    if only:
        out = [r for r in out if r.id in only or r.rule in only]
    return out


def apply(recs: list[Recommendation], client, *, addr: str) -> list[Applied]:
    """Send each recommendation's API calls through the recording client (stopped before the wire in a dry run)."""
    results = []
    for rec in recs:
        done: list[str] = []
        try:
            for change in rec.changes:
                op = change_operation(change, addr)
                reply = client.request(
                    change.method or "PUT",
                    change.path,
                    list(change.params),
                    change.body.decode("utf-8") if change.body is not None else None,
                )
                body = reply.body if isinstance(reply.body, str) else ("false" if reply.body is False else "")
                if reply.status >= 400:
                    raise FoundationError(f"{rec.id}: Consul answered {reply.status} {body.strip()[:120]}")
                if body == "false":  # a check-and-set that lost: someone changed the value since we read it
                    raise ConflictError(f"{rec.id}: the value changed since it was read (check-and-set failed)")
                done.append(render.curl(op))
            results.append(Applied(rec.id, done, "applied"))
        except FoundationError as exc:
            results.append(Applied(rec.id, done, "failed", exc.message))
    return results


def stored_report(report: Report, *, node: str | None = None) -> bytes:
    """The JSON stored at ``foundation/optimizer/last`` by the agent task (same schema, plus who ran it)."""
    data = report.to_dict()
    data["stored_by"] = node or report.node
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode("utf-8")
