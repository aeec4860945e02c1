"""Singletons and replicated services: the CLI side of placement (the seed's ProcessManager).

The CLI only writes a spec to ``foundation/services/<name>`` and reads what the
node agents report; the agents (:mod:`foundation_cli.agent.placement`) do the
running. :func:`agent_side_operations` spells out what the agents send, as the
same raw-operation model the recorder uses, so ``--explain`` can show both.
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

from foundation_cli.core import keys
from foundation_cli.core.agent_requests import lock_value, service_registration, session_body
from foundation_cli.core.service_spec import ServiceSpec, check_update, validate_name
from foundation_cli.core.timing import Timing
from foundation_cli.errors import ConflictError, FoundationError, NotFoundError, UsageError
from foundation_cli.raw.address import ConsulAddress
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import Recorder

AGENT_SERVICE = keys.AGENT_SERVICE


@dataclass
class InstanceView:
    """One instance as ``ps`` shows it."""

    name: str
    mode: str
    node: str | None
    pid: int | None
    state: str
    health: str
    started: float | None
    restarts: int
    generation: int | None = None
    log: str | None = None
    session: str | None = None
    lock_key: str | None = None
    fencing_token: int | None = None
    error: str | None = None  # what the agent reports going wrong (cannot execute, disk full …)

    def uptime(self, now: float | None = None) -> float | None:
        if self.started is None or self.state != "running":
            return None
        return max(0.0, (now or time.time()) - self.started)

    def to_dict(self) -> dict[str, Any]:
        up = self.uptime()
        return {
            "name": self.name,
            "mode": self.mode,
            "node": self.node,
            "pid": self.pid,
            "state": self.state,
            "health": self.health,
            "started": self.started,
            "uptime_s": None if up is None else round(up, 1),
            "restarts": self.restarts,
            "generation": self.generation,
            "log": self.log,
            "session": self.session,
            "lock_key": self.lock_key,
            "fencing": self.fencing_token,
            "error": self.error,
        }


@dataclass
class StartResult:
    spec: ServiceSpec
    changed: bool
    instances: list[InstanceView] = field(default_factory=list)
    waited: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "mode": self.spec.mode,
            "generation": self.spec.generation,
            "changed": self.changed,
            "spec_key": keys.SERVICES + self.spec.name,
            "instances": [i.to_dict() for i in self.instances],
        }


# A started process counts as running once it has stayed up this long (a command that exits at once
# is then reported with its exit status instead of as started).
SETTLE_SECONDS = 1.0


class ProcessManager:
    """Placement operations on a connected, recording Consul client."""

    def __init__(self, client, *, dry_run: bool = False) -> None:
        self.client = client
        self.dry_run = dry_run

    # ------------------------------------------------------------------ specs
    def get_spec(self, name: str) -> tuple[ServiceSpec | None, int]:
        """The stored spec and its ModifyIndex (0 when absent)."""
        _i, data = self.client.kv.get(keys.SERVICES + name)
        if not data or data.get("Value") is None:
            return None, 0
        return ServiceSpec.from_json(data["Value"]), int(data["ModifyIndex"])

    def list_specs(self) -> dict[str, ServiceSpec]:
        _i, items = self.client.kv.get(keys.SERVICES, recurse=True)
        out = {}
        for item in items or []:
            name = item["Key"][len(keys.SERVICES) :]
            if name and "/" not in name and item.get("Value") is not None:
                try:
                    out[name] = ServiceSpec.from_json(item["Value"])
                except UsageError:
                    continue
        return out

    def start(self, spec: ServiceSpec, *, wait: bool = True, timeout: float = 60.0) -> StartResult:
        """Store the spec (check-and-set); with ``wait``, until the agents report it running."""
        spec.validate()
        existing, index = self.get_spec(spec.name)
        spec = check_update(existing, spec)
        changed = existing is None or existing.to_json() != spec.to_json()
        if changed:
            ok = self.client.kv.put(keys.SERVICES + spec.name, spec.to_json(), cas=index)
            if not ok:
                raise ConflictError(
                    f"service {spec.name!r} changed while it was being updated", hint="run the command again"
                )
        result = StartResult(spec, changed)
        if wait and not self.dry_run:
            result.instances = self.wait_running(spec, timeout=timeout)
            result.waited = True
        return result

    def restart(self, name: str, *, wait: bool = True, timeout: float = 60.0) -> StartResult:
        """Bump the generation: every agent running it restarts its process (singleton keeps its node)."""
        validate_name(name)
        existing, index = self.get_spec(name)
        if existing is None:
            raise NotFoundError(f"no service named {name!r}", hint="`foundation ps` lists the services")
        existing.generation += 1
        ok = self.client.kv.put(keys.SERVICES + name, existing.to_json(), cas=index)
        if not ok:
            raise ConflictError(f"service {name!r} changed while restarting it", hint="run the command again")
        result = StartResult(existing, True)
        if wait and not self.dry_run:
            result.instances = self.wait_running(existing, timeout=timeout)
            result.waited = True
        return result

    def stop(self, name: str, *, wait: bool = True, timeout: float = 30.0) -> dict[str, Any]:
        """Delete the spec; wait for the agents to stop their instances; remove the lock and status keys."""
        validate_name(name)
        existing, index = self.get_spec(name)
        if existing is None:
            raise NotFoundError(f"no service named {name!r}", hint="`foundation ps` lists the services")
        self.client.kv.delete(keys.SERVICES + name, cas=index)
        left: list[str] = []
        if wait and not self.dry_run:
            left = self._wait_status_gone(name, timeout)
        self.client.kv.delete(keys.LOCKS + name)
        self.client.kv.delete(f"{keys.STATUS}{name}/", recurse=True)
        return {"name": name, "mode": existing.mode, "stopped": True, "unconfirmed_nodes": left}

    # ------------------------------------------------------------------ waiting
    def _status(self, name: str, index: int | None = None, wait: str | None = None) -> tuple[int, list[dict]]:
        idx, items = self.client.kv.get(f"{keys.STATUS}{name}/", recurse=True, index=index, wait=wait)
        out = []
        for item in items or []:
            try:
                out.append(json.loads(item["Value"]))
            except (TypeError, ValueError):
                continue
        return int(idx), out

    def eligible_agent_nodes(self, spec: ServiceSpec) -> list[str]:
        """Nodes with a passing agent whose node meta satisfies the spec's constraint."""
        _i, entries = self.client.health.service(AGENT_SERVICE, passing=True)
        nodes = []
        for entry in entries or []:
            node = entry.get("Node") or {}
            if spec.eligible(node.get("Meta") or {}):
                nodes.append(node.get("Node"))
        return sorted(n for n in nodes if n)

    def wait_running(self, spec: ServiceSpec, *, timeout: float) -> list[InstanceView]:
        """Block (Consul blocking queries on the status prefix) until the spec's generation runs.

        A process counts as running once it has stayed up for :data:`SETTLE_SECONDS` as seen
        from here: a command that exits at once is reported with its exit status and output
        (after the agent has seen it fail twice), never as started.
        """
        deadline = time.monotonic() + timeout
        index: int | None = None
        last: list[dict] = []
        first_seen: dict[tuple, float] = {}  # (node, pid) -> when this run first saw it running
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if remaining <= 0:
                break
            unsettled = [now - t for t in first_seen.values() if now - t < SETTLE_SECONDS]
            if index is None:
                wait = None
            elif unsettled:
                wait = f"{max(50, int((SETTLE_SECONDS - max(unsettled)) * 1000))}ms"
            else:
                wait = f"{max(1, min(10, int(remaining)))}s"
            index, statuses = self._status(spec.name, index, wait)
            now = time.monotonic()
            last = [s for s in statuses if s.get("generation") == spec.generation]
            running = [s for s in last if s.get("state") == "running"]
            seen = {(s.get("node"), s.get("pid")) for s in running}
            first_seen = {k: first_seen.get(k, now) for k in seen}
            failed = [s for s in last if s.get("state") in ("failed", "exited", "backoff") and s.get("error")]
            if failed and not running:
                err = failed[0]
                raise FoundationError(
                    f"{spec.name} failed to start on {err.get('node')}: {err.get('error')}",
                    hint=f"`foundation logs {spec.name} --node {err.get('node')}`",
                )
            crashing = [s for s in last if s.get("state") in ("failed", "backoff") and _keeps_exiting(spec, s)]
            if crashing and not running:
                raise _crash_error(spec, crashing[0])
            settled = [s for s in running if now - first_seen[(s.get("node"), s.get("pid"))] >= SETTLE_SECONDS]
            if spec.mode == "singleton" and settled:
                return [self._view(spec, s) for s in settled]
            if spec.mode == "replicated" and settled:
                wanted = set(self.eligible_agent_nodes(spec))
                if wanted and wanted <= {s.get("node") for s in settled}:
                    return [self._view(spec, s) for s in settled]
        agents = self.eligible_agent_nodes(spec)
        if not agents:
            raise FoundationError(
                f"{spec.name} is stored but no node agent picked it up within {timeout:.0f}s: no eligible agent",
                hint="start `foundation agent run` on the nodes (foundation up does), or check --node-meta",
            )
        states = ", ".join(f"{s.get('node')}: {s.get('state')}" for s in last) or "no instance reported"
        raise FoundationError(
            f"{spec.name} is not running after {timeout:.0f}s ({states})",
            hint=f"`foundation ps {spec.name}` and `foundation logs {spec.name}`",
        )

    def _wait_status_gone(self, name: str, timeout: float) -> list[str]:
        deadline = time.monotonic() + timeout
        index: int | None = None
        statuses: list[dict] = []
        while time.monotonic() < deadline:
            remaining = max(1, min(10, int(deadline - time.monotonic())))
            index, statuses = self._status(name, index, f"{remaining}s" if index else None)
            if not statuses:
                return []
            # Only agents that are alive will answer; a dead node's record is cleaned up by us.
            alive = set(self._alive_agent_nodes())
            if not any(s.get("node") in alive for s in statuses):
                return []
        return sorted({str(s["node"]) for s in statuses if s.get("node")})

    def _alive_agent_nodes(self) -> list[str]:
        _i, entries = self.client.health.service(AGENT_SERVICE, passing=True)
        return [str(n) for e in entries or [] if (n := (e.get("Node") or {}).get("Node"))]

    # ------------------------------------------------------------------ ps
    def _view(self, spec: ServiceSpec, status: dict, health: str = "", session: str | None = None) -> InstanceView:
        return InstanceView(
            name=spec.name,
            mode=spec.mode,
            node=status.get("node"),
            pid=status.get("pid"),
            state=status.get("state") or "?",
            health=health,
            started=status.get("started"),
            restarts=int(status.get("restarts") or 0),
            generation=status.get("generation"),
            log=status.get("log"),
            session=session,
            lock_key=keys.LOCKS + spec.name if spec.mode == "singleton" else None,
            fencing_token=status.get("fencing"),
            error=status.get("error"),
        )

    def ps(self, name: str | None = None) -> list[InstanceView]:
        """Every instance of every service (or of ``name``), with health from the catalog."""
        if name is not None:
            validate_name(name)
            spec, _ = self.get_spec(name)
            if spec is None:
                raise NotFoundError(f"no service named {name!r}", hint="`foundation ps` lists the services")
            specs = {name: spec}
        else:
            specs = self.list_specs()
        _i, status_items = self.client.kv.get(keys.STATUS, recurse=True)
        _i, lock_items = self.client.kv.get(keys.LOCKS, recurse=True)
        statuses: dict[str, dict[str, dict]] = {}
        for item in status_items or []:
            rest = item["Key"][len(keys.STATUS) :]
            if "/" not in rest:
                continue
            svc, node = rest.split("/", 1)
            try:
                statuses.setdefault(svc, {})[node] = json.loads(item["Value"])
            except (TypeError, ValueError):
                continue
        locks = {item["Key"][len(keys.LOCKS) :]: item.get("Session") for item in lock_items or []}
        rows: list[InstanceView] = []
        for svc, spec in sorted(specs.items()):
            health = self._health(svc)
            session = locks.get(svc)
            holder_node = self._session_node(session) if session else None
            reported = statuses.get(svc, {})
            if spec.mode == "singleton":
                for node, st in sorted(reported.items()):
                    state = st.get("state") or "?"
                    if node != holder_node:
                        state = "stale" if state == "running" else state
                    rows.append(
                        self._view(
                            spec, st | {"state": state}, health.get(node, ""), session if node == holder_node else None
                        )
                    )
                if not reported:
                    rows.append(
                        InstanceView(
                            svc,
                            spec.mode,
                            holder_node,
                            None,
                            "pending",
                            "",
                            None,
                            0,
                            spec.generation,
                            session=session,
                            lock_key=keys.LOCKS + svc,
                        )
                    )
            else:
                alive = set(self._alive_agent_nodes()) if reported else set()
                for node, st in sorted(reported.items()):
                    if node not in alive and st.get("state") == "running":
                        st = st | {"state": "lost"}  # its node or agent is gone; the record is what it said last
                    rows.append(self._view(spec, st, health.get(node, "")))
                if not reported:
                    rows.append(InstanceView(svc, spec.mode, None, None, "pending", "", None, 0, spec.generation))
        return rows

    def _health(self, name: str) -> dict[str, str]:
        """Node → aggregated check status of the service instance there."""
        _i, entries = self.client.health.service(name)
        out: dict[str, str] = {}
        for entry in entries or []:
            statuses = [c.get("Status") for c in entry.get("Checks") or []]
            agg = "critical" if "critical" in statuses else "warning" if "warning" in statuses else "passing"
            out[str((entry.get("Node") or {}).get("Node"))] = agg
        return out

    def _session_node(self, session: str) -> str | None:
        _i, info = self.client.session.info(session)
        return (info or {}).get("Node")

    # ------------------------------------------------------------------ logs
    def log_location(self, name: str, node: str | None) -> tuple[str, str]:
        """(node, log path on that node) from the status the agent reported."""
        validate_name(name)
        spec, _ = self.get_spec(name)
        _idx, statuses = self._status(name)
        if spec is None and not statuses:
            raise NotFoundError(f"no service named {name!r}", hint="`foundation ps` lists the services")
        if node:
            statuses = [s for s in statuses if s.get("node") == node]
            if not statuses:
                raise NotFoundError(f"{name} has no instance on node {node!r}", hint=f"`foundation ps {name}`")
        elif len(statuses) > 1:
            running = [s for s in statuses if s.get("state") == "running"]
            if spec is not None and spec.mode == "singleton" and len(running) == 1:
                statuses = running
            else:
                nodes = ", ".join(sorted(str(s.get("node")) for s in statuses))
                raise UsageError(f"{name} runs on several nodes ({nodes})", hint="choose one with --node")
        if not statuses or not statuses[0].get("log"):
            raise NotFoundError(f"{name} has not reported a log file yet", hint=f"`foundation ps {name}`")
        return statuses[0]["node"], statuses[0]["log"]

    def node_address(self, node: str) -> str | None:
        _i, data = self.client.catalog.node(node)
        return ((data or {}).get("Node") or {}).get("Address")

    def local_node(self) -> str | None:
        me = self.client.agent.self()
        return (me.get("Config") or {}).get("NodeName")


def agent_side_operations(
    spec: ServiceSpec, address: ConsulAddress, *, token: bool = False
) -> list[tuple[str, RawOperation]]:
    """What each node agent sends for ``spec`` (not sent by this CLI): for ``--explain``.

    The same gateway methods the agent calls, with the same bodies
    (:mod:`foundation_cli.core.agent_requests`), on a client that records and
    sends nothing — so what is shown cannot drift from what the agents send.
    """
    from foundation_cli.tools import consul as consul_tool  # py-consul + requests: only when explaining

    timing = Timing()
    node = "NODE"
    recorder = Recorder()
    agent = consul_tool.plan_client(address, recorder=recorder, token=token)
    ops: list[tuple[str, RawOperation]] = []

    def step(why: str, call) -> None:
        done = len(recorder.operations)
        call()
        ops.extend((why, op) for op in recorder.operations[done:])

    if spec.mode == "singleton":
        sid = consul_tool.PLAN_SESSION
        step(
            "each eligible agent has one session, bound to its node's gossip health and its own TTL check",
            lambda: agent.session.create(session_body(node, timing)),
        )
        step(
            "each contends for the lock when it is free; the winner runs the command",
            lambda: agent.kv.acquire(keys.LOCKS + spec.name, lock_value(node), sid),
        )
        step(
            f"the holder confirms its session every {timing.confirm_interval}s and stops the process after "
            f"{timing.fence_timeout}s without confirmation (< lock-delay {timing.lock_delay}s)",
            lambda: agent.session.info(sid, consistency="consistent"),
        )
    step(
        "the agent running it registers the instance with a check tied to the process",
        lambda: agent.agent.service.register(service_registration(spec, node, timing)),
    )
    step(
        "and reports the instance for `foundation ps`",
        lambda: agent.kv.put(
            f"{keys.STATUS}{spec.name}/{node}", '{"node": "NODE", "pid": 1234, "state": "running", ...}'
        ),
    )
    return ops


def raw_equivalent(spec: ServiceSpec) -> str:
    """The hand-run equivalent with the stock consul CLI (no fencing, 15 s default lock-delay)."""
    cmd = " ".join(shlex.quote(a) for a in spec.command)
    if spec.mode == "singleton":
        return f"consul lock -n=1 {keys.LOCKS}{spec.name} {cmd}    # on every node"
    return f"{cmd}    # on every node, e.g. as a systemd unit, plus `consul services register`"


def _keeps_exiting(spec: ServiceSpec, status: dict) -> bool:
    """The agent saw the command fail twice in a row (once, when it will not be restarted)."""
    failures = int(status.get("failures") or 0)
    return failures >= 2 or (failures >= 1 and spec.restart == "never")


def _crash_error(spec: ServiceSpec, status: dict) -> FoundationError:
    """What a command that keeps exiting said: its exit status and its last output lines."""
    node = status.get("node")
    code = status.get("exit_code")
    failures = int(status.get("failures") or 0)
    times = "once" if failures == 1 else f"{failures} times in a row"
    output = [str(line) for line in (status.get("last_output") or [])][-5:]
    return FoundationError(
        f"{spec.name} keeps exiting on {node}: exit status {code}, {times}"
        + ("; its last output:" if output else " (it printed nothing)"),
        details=output,
        hint=f"fix the command and `foundation restart {spec.name}`, or `foundation stop {spec.name}`;"
        f" full output: `foundation logs {spec.name} --node {node}`",
    )
