"""``foundation drain`` / ``undrain``: the CLI side (the node's agent does the work, core/drain.py).

The CLI writes or deletes ``foundation/drain/<node>`` and then waits, with
blocking queries on the status prefix, until the node's agent has stopped its
instances, the singletons that ran there run elsewhere, and the node's
``_node_maintenance`` check is there (or gone, for ``undrain``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from foundation_cli.core import drain as core_drain
from foundation_cli.core import keys
from foundation_cli.errors import NotFoundError
from foundation_cli.raw.operation import RawOperation


@dataclass
class DrainResult:
    node: str
    drained: bool
    changed: bool
    moved: dict[str, str | None] = field(default_factory=dict)  # singleton -> node it runs on now
    stopped: list[str] = field(default_factory=list)  # replicated instances stopped on the node
    maintenance: bool | None = None
    waited: bool = False
    pending: list[str] = field(default_factory=list)  # what had not happened when the wait ended

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "drained": self.drained,
            "changed": self.changed,
            "mark_key": core_drain.mark_key(self.node),
            "moved": self.moved,
            "stopped": self.stopped,
            "maintenance": self.maintenance,
            "waited": self.waited,
            "pending": self.pending,
        }


class Drainer:
    def __init__(self, client, *, dry_run: bool = False) -> None:
        self.client = client
        self.dry_run = dry_run

    # ------------------------------------------------------------------ reads
    def drained(self) -> dict[str, dict]:
        """Node → its drain mark (reason, by, since)."""
        _i, items = self.client.kv.get(keys.DRAIN, recurse=True)
        out = {}
        for item in items or []:
            node = item["Key"][len(keys.DRAIN) :]
            if node and "/" not in node:
                out[node] = core_drain.parse_mark(item.get("Value"))
        return out

    def _check_node(self, node: str) -> None:
        _i, nodes = self.client.catalog.nodes()
        names = sorted(n.get("Node") for n in nodes or [])
        if node not in names:
            raise NotFoundError(f"no node named {node!r} in the catalog", hint="nodes: " + ", ".join(names))

    def _instances_on(self, node: str) -> dict[str, dict]:
        """Service → status record the node's agent reports for it."""
        _i, items = self.client.kv.get(keys.STATUS, recurse=True)
        return _on_node(items, node)

    def _in_maintenance(self, node: str) -> bool:
        _i, checks = self.client.health.node(node)
        return any(c.get("CheckID") == core_drain.MAINT_CHECK for c in checks or [])

    # ------------------------------------------------------------------ writes
    def drain(self, node: str, *, reason: str | None, by: str | None, wait: bool, timeout: float) -> DrainResult:
        self._check_node(node)
        marks = self.drained()
        before = self._instances_on(node)
        result = DrainResult(node, True, node not in marks)
        if result.changed:
            self.client.kv.put(core_drain.mark_key(node), core_drain.mark_body(reason, by))
        singletons = sorted(n for n, s in before.items() if s.get("mode") == "singleton")
        result.stopped = sorted(n for n, s in before.items() if s.get("mode") != "singleton")
        result.moved = {name: None for name in singletons}
        if not wait or self.dry_run:
            return result
        result.waited = True
        deadline = time.monotonic() + timeout
        index: int | None = None
        while True:
            index, items = self.client.kv.get(keys.STATUS, recurse=True, index=index, wait="2s")
            index = int(index or 0) or None
            on_node = _on_node(items, node)
            for name in singletons:
                result.moved[name] = _running_elsewhere(items, name, node)
            result.maintenance = self._in_maintenance(node)
            result.pending = sorted(f"{n} still on {node}" for n in on_node) + sorted(
                f"{n} not running elsewhere yet" for n, where in result.moved.items() if where is None
            )
            if not result.maintenance:
                result.pending.append(f"{node} not in maintenance yet")
            if not result.pending or time.monotonic() >= deadline:
                return result

    def undrain(self, node: str, *, wait: bool, timeout: float) -> DrainResult:
        marks = self.drained()
        result = DrainResult(node, False, node in marks)
        if result.changed:
            self.client.kv.delete(core_drain.mark_key(node))
        elif not self.dry_run:
            self._check_node(node)
        if not wait or self.dry_run:
            return result
        result.waited = True
        deadline = time.monotonic() + timeout
        while True:
            result.maintenance = self._in_maintenance(node)
            if not result.maintenance:
                return result
            if time.monotonic() >= deadline:
                result.pending = [f"{node} still in maintenance"]
                return result
            time.sleep(0.2)


def _on_node(items, node: str) -> dict[str, dict]:
    out = {}
    for item in items or []:
        rest = item["Key"][len(keys.STATUS) :]
        if rest.count("/") != 1 or not rest.endswith("/" + node):
            continue
        try:
            status = json.loads(item["Value"])
        except (TypeError, ValueError):
            continue
        if status.get("state") not in (None, "stopped"):
            out[rest.split("/", 1)[0]] = status
    return out


def _running_elsewhere(items, name: str, node: str) -> str | None:
    for item in items or []:
        rest = item["Key"][len(keys.STATUS) :]
        if not rest.startswith(name + "/") or rest.endswith("/" + node):
            continue
        try:
            status = json.loads(item["Value"])
        except (TypeError, ValueError):
            continue
        if status.get("state") == "running":
            return rest.split("/", 1)[1]
    return None


def agent_side_operations(node: str, consul_addr: str, *, drain: bool) -> list[tuple[str, RawOperation]]:
    """What the node's agent sends after the mark changes (for ``--explain``; not sent by the CLI)."""
    base = consul_addr.rstrip("/")
    agent = f"http://<{node}'s consul agent>:8500"
    ops: list[tuple[str, RawOperation]] = []
    if drain:
        ops.append(
            (
                f"the agent on {node} stops each instance (SIGTERM, SIGKILL after 5 s), then releases each "
                "singleton lock: free at once (no lock-delay), the other agents acquire it immediately",
                RawOperation(
                    kind="consul-http",
                    method="PUT",
                    url=f"{base}/v1/kv/{keys.LOCKS}<name>?release=<session-id>",
                    body=json.dumps({"node": node}).encode(),
                ),
            )
        )
        ops.append(
            (
                f"and puts its own node in maintenance (discovery and ?passing queries skip {node})",
                RawOperation(
                    kind="consul-http",
                    method="PUT",
                    url=f"{agent}/v1/agent/maintenance?enable=true&reason=foundation+drain",
                ),
            )
        )
    else:
        ops.append(
            (
                f"the agent on {node} takes its node out of maintenance and runs what is placed there again",
                RawOperation(kind="consul-http", method="PUT", url=f"{agent}/v1/agent/maintenance?enable=false"),
            )
        )
    return ops
