"""HealthMonitor: one snapshot of the cluster's health, read through the recording Consul client.

Why a snapshot: ``status`` shows it, ``metrics`` exports it, the optimizer's
rules reason over it, and the agent task stores what the rules made of it.
Every number keeps a reference to the raw read (:class:`RawOperation`) it came
from, so a recommendation can show its evidence as a ``curl`` line.

Scale: only bulk endpoints are read (one request each, never one per node or
per service), reads use ``?stale`` where a slightly old answer is fine, and
the reads run concurrently. Rates (catalog churn, events, check flapping) are
measured over a short *window* with blocking queries: each time an index moves
the new state is read and compared. Counts over a window are lower bounds
(Consul coalesces changes between two answers of a blocking query); see
docs/health.md.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from foundation_cli.core import health_parsers as parse
from foundation_cli.core import keys
from foundation_cli.core.health_models import (  # noqa: F401 - the snapshot's parts, re-exported
    SCHEMA_VERSION,
    AgentConfig,
    Checks,
    Churn,
    ClusterInfo,
    Coordinates,
    Events,
    FlappingCheck,
    FoundationService,
    MemberInfo,
    Members,
    Runtime,
    ServerInfo,
    Servers,
    Sessions,
    SingletonConfig,
    Snapshot,
    read_ref,
)
from foundation_cli.core.health_parsers import _kv_value, parse_duration_ms, vivaldi_rtt_ms  # noqa: F401
from foundation_cli.core.health_reader import STALE, Reader, ReadError, _ok  # noqa: F401

if TYPE_CHECKING:
    from foundation_cli.core.health_reader import Answer
from foundation_cli.core.health_watch import Watches
from foundation_cli.raw.operation import RawOperation


class HealthMonitor(Watches):
    """Takes snapshots; keeps check-status history between snapshots (``--watch``, the agent task).

    Reads (``_read_*``) and assembly live here; the windowed watches and the check
    history in :mod:`.health_watch`; turning answers into the snapshot's parts in
    :mod:`.health_parsers`; the parts themselves in :mod:`.health_models`.
    """

    # The parsers under their former method names (tests and callers used them so).
    _members = staticmethod(parse.members)
    _servers = staticmethod(parse.servers)
    _agent_config = staticmethod(parse.agent_config)
    _services = staticmethod(parse.services)
    _checks = staticmethod(parse.checks)
    _churn = staticmethod(parse.churn)
    _events = staticmethod(parse.events)
    _runtime = staticmethod(parse.runtime)
    _coordinates = staticmethod(parse.coordinates)
    _singleton = staticmethod(parse.singleton)

    def __init__(self, client_factory: Callable[[], Any], *, consul_addr: str = "", workers: int = 6) -> None:
        self.reader = Reader(client_factory)
        self.consul_addr = consul_addr
        self.workers = workers
        # Check statuses at the end of the last snapshot, and recent transitions (t, from, to) per check.
        self._last_status: dict[tuple[str, str], str] = {}
        self._transitions: dict[tuple[str, str], list[tuple[float, str, str]]] = {}
        self._history_started: float | None = None
        self.history_s = 600.0

    # -- public ---------------------------------------------------------------------------
    def snapshot(self, *, window: float = 1.0) -> Snapshot:
        """Read everything once, watch the moving parts for ``window`` seconds, and assemble the snapshot."""
        started = time.time()
        reads: dict[str, RawOperation] = {}
        errors: dict[str, str] = {}
        results: dict[str, Any] = {}
        lock = threading.Lock()

        def run(name: str, fn: Callable[[dict[str, RawOperation]], Any]) -> None:
            local_reads: dict[str, RawOperation] = {}
            try:
                value = fn(local_reads)
            except ReadError as exc:
                with lock:
                    errors[name] = str(exc)
                    reads.update(local_reads)
                return
            with lock:
                results[name] = value
                reads.update(local_reads)

        jobs: list[tuple[str, Callable]] = [
            ("self", self._read_self),
            ("members", self._read_members),
            ("raft", self._read_raft),
            ("autopilot", self._read_autopilot),
            ("services", self._read_services),
            ("sessions", self._read_sessions),
            ("metrics", self._read_metrics),
            ("coordinates", self._read_coordinates),
            ("kv", self._read_kv),
            ("churn", lambda r: self._watch_catalog(r, window)),
            ("events", lambda r: self._watch_events(r, window)),
            ("checks", lambda r: self._watch_checks(r, window)),
        ]
        with ThreadPoolExecutor(max_workers=max(1, min(self.workers + 3, len(jobs)))) as pool:
            for future in [pool.submit(run, name, fn) for name, fn in jobs]:
                future.result()
        snap = self._assemble(results, errors, reads, window)
        snap.taken_at = started
        snap.duration_ms = (time.time() - started) * 1000.0
        return snap

    # -- reads (each returns plain data; records its reads under stable names) ---------------
    def _get(self, reads: dict, name: str, path: str, params=None, *, allow: tuple[int, ...] = ()) -> Answer:
        try:
            answer = self.reader.get(path, params)
        except ReadError as exc:
            raise ReadError(f"{path}: {exc}") from None
        reads[name] = answer.operation
        return _ok(answer, path, allow=allow)

    def _read_self(self, reads) -> dict:
        return self._get(reads, "agent_self", "/v1/agent/self").body or {}

    def _read_members(self, reads) -> list:
        return self._get(reads, "members", "/v1/agent/members").body or []

    def _read_raft(self, reads) -> dict:
        out = {"raft": self._get(reads, "raft_configuration", "/v1/operator/raft/configuration", STALE).body or {}}
        out["autopilot_config"] = (
            self._get(reads, "autopilot_configuration", "/v1/operator/autopilot/configuration", STALE).body or {}
        )
        return out

    def _read_autopilot(self, reads) -> dict:
        # 429: the cluster is unhealthy (the body is still the health report); 500: no leader / not a server.
        answer = self._get(reads, "autopilot_health", "/v1/operator/autopilot/health", allow=(429, 500))
        return {"status": answer.status, "body": answer.body}

    def _read_services(self, reads) -> dict:
        answer = self._get(reads, "ui_services", "/v1/internal/ui/services", STALE, allow=(404,))
        if answer.status == 404:  # not every Consul has the UI endpoint: fall back to names only
            fallback = self._get(reads, "catalog_services", "/v1/catalog/services", STALE)
            return {"ui": None, "names": fallback.body or {}}
        return {"ui": answer.body or []}

    def _read_sessions(self, reads) -> list:
        return self._get(reads, "sessions", "/v1/session/list", STALE).body or []

    def _read_metrics(self, reads) -> dict:
        return self._get(reads, "agent_metrics", "/v1/agent/metrics").body or {}

    def _read_coordinates(self, reads) -> list:
        return self._get(reads, "coordinates", "/v1/coordinate/nodes", STALE).body or []

    def _read_kv(self, reads) -> dict:
        out: dict[str, Any] = {}
        answer = self._get(reads, "kv_cluster", "/v1/kv/" + keys.CLUSTER, STALE, allow=(404,))
        out["cluster"] = answer.body if answer.status == 200 else None
        answer = self._get(reads, "kv_services", "/v1/kv/" + keys.SERVICES, [("recurse", ""), *STALE], allow=(404,))
        out["services"] = answer.body if answer.status == 200 else []
        answer = self._get(
            reads,
            "kv_singleton_config",
            "/v1/kv/" + keys.CONFIG + "singleton.",
            [("recurse", ""), *STALE],
            allow=(404,),
        )
        out["config"] = answer.body if answer.status == 200 else []
        return out

    # -- assembly -------------------------------------------------------------------------------
    def _assemble(self, results: dict, errors: dict, reads: dict, window: float) -> Snapshot:
        agent_self = results.get("self") or {}
        config = agent_self.get("Config") or {}
        debug = agent_self.get("DebugConfig") or {}
        stats = agent_self.get("Stats") or {}
        kv = results.get("kv") or {}

        cluster = ClusterInfo(
            datacenter=config.get("Datacenter"),
            agent_node=config.get("NodeName"),
            agent_is_server=bool(config.get("Server")),
            agent_version=config.get("Version"),
            dev_mode=bool(debug.get("DevMode")),
            agent_addr=(agent_self.get("Member") or {}).get("Addr"),
        )
        record = _kv_value(kv.get("cluster"))
        if record:
            try:
                parsed = json.loads(record)
                cluster.cluster_id = parsed.get("cluster_id") or parsed.get("id")
                cluster.mode = parsed.get("mode")
                cluster.datacenter = cluster.datacenter or parsed.get("datacenter")
            except (ValueError, AttributeError):
                cluster.cluster_id = record.strip()[:64]

        members = parse.members(results.get("members") or [])
        servers = parse.servers(results, members)
        agent = parse.agent_config(debug, stats, cluster, agent_self)
        services, churn_counts = parse.services(results, kv)
        checks = parse.checks(self._merge_history(results.get("checks") or {}), window)
        churn = parse.churn(results.get("churn") or {}, churn_counts)
        events = parse.events(results.get("events") or {})
        runtime = parse.runtime(results.get("metrics") or {})
        coords = parse.coordinates(results.get("coordinates") or [], agent_self, config.get("NodeName"))
        singleton = parse.singleton(kv.get("config") or [])
        sessions = Sessions()
        raw_sessions = results.get("sessions") or []
        sessions.total = len(raw_sessions)
        sessions.by_behavior = dict(Counter(s.get("Behavior", "release") for s in raw_sessions))
        sessions.nodes = len({s.get("Node") for s in raw_sessions})
        return Snapshot(
            taken_at=0.0,
            duration_ms=0.0,
            window_s=window,
            consul_addr=self.consul_addr,
            cluster=cluster,
            servers=servers,
            members=members,
            services=services,
            checks=checks,
            sessions=sessions,
            churn=churn,
            events=events,
            runtime=runtime,
            agent=agent,
            coordinates=coords,
            singleton=singleton,
            errors=errors,
            reads=reads,
        )


def monitor_for(settings, recorder=None, *, timeout: float = 10.0) -> HealthMonitor:
    """A monitor reading the Consul agent ``settings`` point at (one client per worker thread)."""
    from foundation_cli.tools import consul as consul_tool

    return HealthMonitor(
        lambda: consul_tool.connect(settings, recorder=recorder, timeout=timeout),
        consul_addr=settings.address.url,
    )
