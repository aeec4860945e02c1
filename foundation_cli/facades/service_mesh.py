"""Service discovery with health (``foundation discover`` / ``foundation services``).

``discover`` is one ``GET /v1/health/service/<name>`` shaped into one structure
per instance: node, address (the service address, else the node's), port,
tags, meta, the checks that apply to it (its own and its node's) and their
aggregate (the worst status). Services Foundation placed and services anything
else registered are the same thing to Consul, so both are found.

``services`` needs one request however big the catalog is:
``GET /v1/internal/ui/services`` (what Consul's own UI uses: instance and check
counts per service). It is an internal endpoint, so when it is missing or
refused Foundation falls back to ``/v1/catalog/services`` plus one
``/v1/health/service/<name>`` per service.
"""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from foundation_cli.errors import NotFoundError, PermissionDeniedError, UsageError

SERVICE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,255}$")
NEAR_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")  # a node name, safe in a URL path
STATUS_ORDER = {"passing": 0, "warning": 1, "critical": 2}


def validate_service(name: str) -> str:
    if not SERVICE_RE.match(name or ""):
        raise UsageError(
            f"invalid service name {name!r}", hint="service names use A-Z a-z 0-9 . _ - : and start alphanumeric"
        )
    return name


def worst(statuses: list[str]) -> str:
    """Aggregate health: the worst status (no checks at all counts as passing, as Consul does)."""
    return max(statuses, key=lambda s: STATUS_ORDER.get(s, 2), default="passing")


@dataclass
class Instance:
    node: str
    address: str
    port: int
    service_id: str
    tags: list[str]
    meta: dict[str, str]
    health: str
    checks: list[dict] = field(default_factory=list)
    node_address: str = ""
    datacenter: str | None = None

    def to_dict(self) -> dict:
        return {
            "node": self.node,
            "address": self.address,
            "port": self.port,
            "service_id": self.service_id,
            "tags": self.tags,
            "meta": self.meta,
            "health": self.health,
            "checks": self.checks,
            "node_address": self.node_address,
            "datacenter": self.datacenter,
        }


def shape_entry(entry: dict) -> Instance:
    """One ``/v1/health/service`` entry → :class:`Instance`."""
    node = entry.get("Node") or {}
    service = entry.get("Service") or {}
    checks = [
        {
            "id": c.get("CheckID"),
            "name": c.get("Name"),
            "status": c.get("Status"),
            "output": c.get("Output") or "",
            "notes": c.get("Notes") or "",
            "scope": "service" if c.get("ServiceID") else "node",
        }
        for c in entry.get("Checks") or []
    ]
    return Instance(
        node=node.get("Node", ""),
        address=service.get("Address") or node.get("Address", ""),
        port=int(service.get("Port") or 0),
        service_id=service.get("ID", ""),
        tags=list(service.get("Tags") or []),
        meta=dict(service.get("Meta") or {}),
        health=worst([c["status"] for c in checks]),
        checks=checks,
        node_address=node.get("Address", ""),
        datacenter=node.get("Datacenter"),
    )


class ServiceMesh:
    """Discovery operations on a connected, recording Consul client."""

    def __init__(self, client) -> None:
        self.client = client

    def discover(
        self,
        name: str,
        *,
        passing: bool = False,
        tag: str | None = None,
        near: str | None = None,
        stale: bool = False,
    ) -> dict:
        """Instances of ``name`` with health, as the ``discover --json`` schema describes."""
        validate_service(name)
        if near and near != "_agent":
            self._check_near(near)
        reply = self.client.health.service_reply(
            name, passing=passing, tag=tag, near=near, consistency="stale" if stale else None
        )
        entries = reply.body if isinstance(reply.body, list) else []
        instances = [shape_entry(e) for e in entries or []]
        if not instances and not (passing or tag):
            raise NotFoundError(
                f"no service named {name!r} is registered", hint="`foundation services` lists the services Consul knows"
            )
        headers = {k.lower(): v for k, v in reply.headers.items()}
        counts = {s: sum(1 for i in instances if i.health == s) for s in ("passing", "warning", "critical")}
        return {
            "service": name,
            "filters": {"passing": passing, "tag": tag, "near": near, "stale": stale},
            "count": len(instances),
            "health": counts,
            "index": int(headers.get("x-consul-index") or 0),
            "known_leader": headers.get("x-consul-knownleader", "true") == "true",
            "last_contact_ms": int(headers.get("x-consul-lastcontact") or 0),
            "instances": [i.to_dict() for i in instances],
        }

    def _check_near(self, near: str) -> None:
        """Consul sorts by an unknown ``near`` node silently (no sort, no error): say so instead."""
        if not NEAR_RE.match(near):
            raise UsageError(f"invalid node name {near!r} for --near", hint="a node name as `foundation ps` shows it")
        _index, node = self.client.catalog.node(near)
        if node is None:
            _index, nodes = self.client.catalog.nodes()
            names = ", ".join(sorted(str(n.get("Node")) for n in nodes or [])[:10])
            raise NotFoundError(
                f"--near {near}: no node by that name, so nothing can be sorted by distance from it",
                hint=f"known nodes: {names}" if names else "`foundation status` lists the nodes",
            )

    def services(self) -> list[dict]:
        """Every service with instance, node and check counts (one request when Consul allows it)."""
        try:
            rows = self.client.catalog.ui_services()
        except (NotFoundError, PermissionDeniedError):
            return self._services_fallback()
        out = []
        for row in rows or []:
            out.append(
                {
                    "name": row.get("Name"),
                    "instances": int(row.get("InstanceCount") or 0),
                    "nodes": len(row.get("Nodes") or []),
                    "checks": {
                        "passing": int(row.get("ChecksPassing") or 0),
                        "warning": int(row.get("ChecksWarning") or 0),
                        "critical": int(row.get("ChecksCritical") or 0),
                    },
                    "tags": sorted(row.get("Tags") or []),
                }
            )
        return sorted(out, key=lambda r: r["name"] or "")

    def _services_fallback(self) -> list[dict]:
        _index, names = self.client.catalog.services()

        def one(name: str) -> dict:
            _i, entries = self.client.health.service(name)
            instances = [shape_entry(e) for e in entries or []]
            checks = [c["status"] for i in instances for c in i.checks]
            return {
                "name": name,
                "instances": len(instances),
                "nodes": len({i.node for i in instances}),
                "checks": {s: checks.count(s) for s in ("passing", "warning", "critical")},
                "tags": sorted(names.get(name) or []),
            }

        with ThreadPoolExecutor(max_workers=8) as pool:
            return sorted(pool.map(one, sorted(names or {})), key=lambda r: r["name"])
