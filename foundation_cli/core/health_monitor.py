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

import base64
import json
import math
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any

from foundation_cli.core import keys
from foundation_cli.raw.operation import RawOperation

SCHEMA_VERSION = 1
MEMBER_STATES = {0: "none", 1: "alive", 2: "leaving", 3: "left", 4: "failed"}
EVENT_LIMIT = 512  # serf's UserEventSizeLimit in Consul 1.8, applied to the encoded event
# Measured on Consul 1.8.7 (see core/envelope.py): encoded size = 98 + 2 x len(name) + len(payload) + len(filters).
EVENT_OVERHEAD = 98
FLAP_MIN_TRANSITIONS = 2  # status changes within the observation window that make a check "flapping"
SINGLETON_KEYS = ("singleton.lock_delay", "singleton.fence_timeout")


# ----------------------------------------------------------------------------------------------
# The snapshot


@dataclass
class ClusterInfo:
    cluster_id: str | None = None
    datacenter: str | None = None
    mode: str | None = None  # from the cluster record: local | ssh | …
    agent_node: str | None = None
    agent_addr: str | None = None
    agent_is_server: bool = False
    agent_version: str | None = None
    dev_mode: bool = False


@dataclass
class ServerInfo:
    name: str
    address: str
    id: str = ""
    voter: bool = True
    leader: bool = False
    serf_status: str | None = None
    healthy: bool | None = None
    last_contact_ms: float | None = None
    version: str | None = None


@dataclass
class Servers:
    count: int = 0
    voters: int = 0
    leader: str | None = None
    failure_tolerance: int | None = None
    healthy: bool | None = None
    autopilot_status: int | None = None  # HTTP status of /v1/operator/autopilot/health (429 = unhealthy)
    autopilot_error: str | None = None
    cleanup_dead_servers: bool | None = None
    last_contact_threshold_ms: float | None = None
    max_last_contact_ms: float | None = None  # the worst follower's last contact with the leader
    dead: list[str] = field(default_factory=list)  # servers in the raft config whose serf status is not alive
    servers: list[ServerInfo] = field(default_factory=list)
    autopilot_config: dict[str, Any] = field(default_factory=dict)  # as read (the optimizer writes it back)


@dataclass
class MemberInfo:
    name: str
    addr: str
    status: str
    role: str  # server | client
    version: str | None = None
    acls: str | None = None  # the member's "acls" tag: 0 disabled, 1 enabled (legacy), 2 enabled


@dataclass
class Members:
    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    members: list[MemberInfo] = field(default_factory=list)


@dataclass
class FoundationService:
    name: str
    mode: str | None = None  # singleton | replicated (from the spec), None if only in the catalog
    spec: bool = False
    instances: int = 0
    nodes: list[str] = field(default_factory=list)
    passing: int = 0
    warning: int = 0
    critical: int = 0


@dataclass
class FlappingCheck:
    node: str
    check_id: str
    name: str
    service: str
    type: str
    transitions: int
    statuses: list[str]
    window_s: float


@dataclass
class Checks:
    total: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    flapping: list[FlappingCheck] = field(default_factory=list)
    samples: int = 0  # how many times the check list was read in the window


@dataclass
class Sessions:
    total: int = 0
    by_behavior: dict[str, int] = field(default_factory=dict)
    nodes: int = 0


@dataclass
class Churn:
    window_s: float = 0.0
    changes: int = 0
    per_min: float = 0.0
    index_start: int | None = None
    index_end: int | None = None
    services: int = 0
    instances: int = 0
    nodes: int = 0


@dataclass
class Events:
    window_s: float = 0.0
    buffered: int = 0  # events in this agent's buffer (Consul keeps the last 256)
    new: int = 0
    per_min: float = 0.0
    max_size_bytes: int = 0
    near_limit: int = 0  # buffered events whose estimated encoded size is >= 80% of the limit
    limit_bytes: int = EVENT_LIMIT
    by_name: dict[str, int] = field(default_factory=dict)


@dataclass
class Runtime:
    goroutines: float | None = None
    alloc_bytes: float | None = None
    sys_bytes: float | None = None
    gc_pause_total_ns: float | None = None
    gc_pause_mean_ms: float | None = None
    gc_pause_max_ms: float | None = None
    leader_last_contact_mean_ms: float | None = None
    leader_last_contact_max_ms: float | None = None


@dataclass
class AgentConfig:
    """What the connected agent says about its own configuration (``/v1/agent/self``)."""

    server: bool = False
    dev_mode: bool = False
    raft_multiplier: float | None = None
    raft_election_timeout_ms: float | None = None
    gossip_encrypted: bool | None = None
    acls_enabled: bool | None = None
    gossip_probe_interval_ms: float | None = None
    gossip_probe_timeout_ms: float | None = None
    gossip_suspicion_mult: int | None = None
    gossip_interval_ms: float | None = None
    bind_loopback: bool = False


@dataclass
class Coordinates:
    nodes: int = 0
    rtt_p50_ms: float | None = None
    rtt_p99_ms: float | None = None
    rtt_max_ms: float | None = None
    max_node: str | None = None


@dataclass
class SingletonConfig:
    lock_delay_s: float | None = None
    lock_delay_raw: str | None = None
    lock_delay_index: int | None = None
    fence_timeout_s: float | None = None
    fence_timeout_raw: str | None = None
    fence_timeout_index: int | None = None
    defaults: dict[str, float] = field(default_factory=dict)


@dataclass
class Snapshot:
    taken_at: float
    duration_ms: float
    window_s: float
    consul_addr: str
    cluster: ClusterInfo
    servers: Servers
    members: Members
    services: list[FoundationService]
    checks: Checks
    sessions: Sessions
    churn: Churn
    events: Events
    runtime: Runtime
    agent: AgentConfig
    coordinates: Coordinates
    singleton: SingletonConfig
    errors: dict[str, str] = field(default_factory=dict)
    reads: dict[str, RawOperation] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The ``status --json`` document (schema foundation_cli/schemas/status.json)."""
        data: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for name in (
            "taken_at",
            "duration_ms",
            "window_s",
            "consul_addr",
            "cluster",
            "servers",
            "members",
            "services",
            "checks",
            "sessions",
            "churn",
            "events",
            "runtime",
            "agent",
            "coordinates",
            "singleton",
            "errors",
        ):
            value = getattr(self, name)
            if isinstance(value, list):
                data[name] = [asdict(v) for v in value]
            elif hasattr(value, "__dataclass_fields__"):
                data[name] = asdict(value)
            else:
                data[name] = value
        data["taken_at"] = round(self.taken_at, 3)
        data["duration_ms"] = round(self.duration_ms, 1)
        data["reads"] = {name: read_ref(op) for name, op in sorted(self.reads.items())}
        return data


def read_ref(op: RawOperation | None) -> dict[str, Any] | None:
    """A compact, JSON-ready reference to the read that produced a number."""
    if op is None:
        return None
    return {"method": op.method or "GET", "url": op.url, "status": op.status}


# ----------------------------------------------------------------------------------------------
# Reading


class ReadError(Exception):
    """A read that failed; the snapshot keeps going without it (listed under ``errors``)."""


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: Any
    op: RawOperation

    @property
    def index(self) -> int | None:
        value = self.headers.get("X-Consul-Index")
        try:
            return int(value) if value is not None else None
        except ValueError:
            return None


class Reader:
    """GETs through the Consul gateway, returning status, headers and decoded JSON.

    The :class:`RawOperation` returned with each answer is the one the gateway
    recorded: what the evidence shows is what was sent.
    """

    def __init__(self, client_factory: Callable[[], Any]) -> None:
        self._factory = client_factory
        self._local = threading.local()

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            client = self._factory()
            self._local.client = client
        return client

    def get(self, path: str, params: list[tuple[str, str]] | None = None, *, timeout: float | None = None) -> Answer:
        from foundation_cli.errors import FoundationError

        client = self._client()
        try:
            reply = client.request("GET", path, list(params or []))
        except FoundationError as exc:
            raise ReadError(exc.message) from None
        except Exception as exc:  # noqa: BLE001 - any transport failure becomes a partial snapshot
            raise ReadError(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        op = reply.operation or RawOperation(kind="consul-http", method="GET", url=path)
        return Answer(reply.status, reply.headers, reply.body, op)


def _ok(answer: Answer, what: str, *, allow: tuple[int, ...] = ()) -> Answer:
    if answer.status == 200 or answer.status in allow:
        return answer
    text = answer.body if isinstance(answer.body, str) else ""
    raise ReadError(f"{what}: HTTP {answer.status} {text.strip()[:120]}".strip())


STALE = [("stale", "")]


def parse_duration_ms(text: Any) -> float | None:
    """Go duration text (``"1.5s"``, ``"200ms"``, ``"1m0s"``, ``"350µs"``) → milliseconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) / 1e6  # Go durations in JSON numbers are nanoseconds
    import re

    units = {"h": 3600e3, "m": 60e3, "s": 1e3, "ms": 1.0, "us": 1e-3, "µs": 1e-3, "μs": 1e-3, "ns": 1e-6}
    total = 0.0
    found = False
    for number, unit in re.findall(r"([0-9.]+)(h|ms|m|s|us|µs|μs|ns)", str(text)):
        total += float(number) * units[unit]
        found = True
    return total if found else None


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    pos = min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))
    return ordered[pos]


def vivaldi_rtt_ms(a: dict, b: dict) -> float:
    """Estimated RTT between two Consul network coordinates (Consul's documented formula)."""
    va, vb = a.get("Vec") or [], b.get("Vec") or []
    dist = math.sqrt(sum((x - y) ** 2 for x, y in zip(va, vb, strict=False)))
    rtt = dist + float(a.get("Height", 0)) + float(b.get("Height", 0))
    adjusted = rtt + float(a.get("Adjustment", 0)) + float(b.get("Adjustment", 0))
    if adjusted > 0:
        rtt = adjusted
    return rtt * 1000.0


class HealthMonitor:
    """Takes snapshots; keeps check-status history between snapshots (``--watch``, the agent task)."""

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
        reads[name] = answer.op
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

    # -- windowed watches (blocking queries) --------------------------------------------------
    def _blocking(
        self, reads, name: str, path: str, window: float, params=None, *, on_answer: Callable, max_reads: int = 50
    ) -> int:
        """Read once, then block on the index until ``window`` ends; ``on_answer`` sees each new state.

        ``max_reads`` bounds the work on a busy cluster (each answer is the whole list again).
        """
        deadline = time.monotonic() + window
        first = self._get(reads, name, path, list(params or []))
        on_answer(first)
        index = first.index
        reads_done = 1
        while index is not None and reads_done < max_reads:
            remaining = deadline - time.monotonic()
            if remaining < 0.05:
                break
            wait = f"{int(remaining * 1000)}ms"
            try:
                answer = self.reader.get(path, [*(params or []), ("index", str(index)), ("wait", wait)])
            except ReadError:
                break
            if answer.status != 200:
                break
            reads_done += 1
            if answer.index is not None and answer.index != index:
                on_answer(answer)
            index = answer.index
        return reads_done

    def _watch_catalog(self, reads, window: float) -> dict:
        seen: list[int] = []
        state: dict[str, Any] = {}

        def on_answer(answer: Answer) -> None:
            if answer.index is not None:
                seen.append(answer.index)
            state["services"] = answer.body or {}

        start = time.monotonic()
        self._blocking(reads, "catalog_services", "/v1/catalog/services", window, STALE, on_answer=on_answer)
        nodes = self._get(reads, "catalog_nodes", "/v1/catalog/nodes", STALE)
        return {
            "indexes": seen,
            "elapsed": max(window, time.monotonic() - start),
            "services": state.get("services", {}),
            "nodes": len(nodes.body or []),
        }

    def _watch_events(self, reads, window: float) -> dict:
        snapshots: list[list] = []
        start = time.monotonic()
        self._blocking(reads, "events", "/v1/event/list", window, on_answer=lambda a: snapshots.append(a.body or []))
        return {"snapshots": snapshots, "elapsed": max(window, time.monotonic() - start)}

    def _watch_checks(self, reads, window: float) -> dict:
        transitions: dict[tuple[str, str], list[str]] = {}
        meta: dict[tuple[str, str], dict] = {}
        state: dict[str, Any] = {"last": None, "samples": 0}

        def on_answer(answer: Answer) -> None:
            state["samples"] += 1
            checks = answer.body or []
            state["last"] = checks
            for check in checks:
                key = (check.get("Node", ""), check.get("CheckID", ""))
                seq = transitions.get(key)
                status = check.get("Status", "")
                if seq is None:
                    transitions[key] = [status]
                    meta[key] = check
                elif seq[-1] != status:
                    seq.append(status)

        start = time.monotonic()
        self._blocking(reads, "health_checks", "/v1/health/state/any", window, STALE, on_answer=on_answer, max_reads=20)
        return {
            "last": state["last"] or [],
            "sequences": {k: v for k, v in transitions.items() if len(v) > 1},
            "meta": meta,
            "samples": state["samples"],
            "elapsed": max(window, time.monotonic() - start),
        }

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

        members = self._members(results.get("members") or [])
        servers = self._servers(results, members)
        agent = self._agent_config(debug, stats, cluster, agent_self)
        services, churn_counts = self._services(results, kv)
        checks = self._checks(self._merge_history(results.get("checks") or {}), window)
        churn = self._churn(results.get("churn") or {}, churn_counts)
        events = self._events(results.get("events") or {})
        runtime = self._runtime(results.get("metrics") or {})
        coords = self._coordinates(results.get("coordinates") or [], agent_self, config.get("NodeName"))
        singleton = self._singleton(kv.get("config") or [])
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

    @staticmethod
    def _members(raw: list) -> Members:
        out = Members()
        for m in raw:
            tags = m.get("Tags") or {}
            build = tags.get("build") or ""
            info = MemberInfo(
                name=m.get("Name", ""),
                addr=m.get("Addr", ""),
                status=MEMBER_STATES.get(m.get("Status"), str(m.get("Status"))),
                role="server" if tags.get("role") == "consul" else "client",
                version=build.split(":", 1)[0] or None,
                acls=tags.get("acls"),
            )
            out.members.append(info)
        out.members.sort(key=lambda m: m.name)
        out.total = len(out.members)
        out.by_state = dict(Counter(m.status for m in out.members))
        out.versions = dict(Counter(m.version or "unknown" for m in out.members if m.status == "alive"))
        out.failed = [m.name for m in out.members if m.status == "failed"]
        out.left = [m.name for m in out.members if m.status == "left"]
        return out

    @staticmethod
    def _servers(results: dict, members: Members) -> Servers:
        out = Servers()
        raft = (results.get("raft") or {}).get("raft") or {}
        ap_conf = (results.get("raft") or {}).get("autopilot_config") or {}
        ap = results.get("autopilot") or {}
        health = ap.get("body") if isinstance(ap.get("body"), dict) else {}
        out.autopilot_status = ap.get("status")
        if ap and ap.get("status") != 200 and not health:
            out.autopilot_error = str(ap.get("body") or "")[:200]
        by_id = {s.get("ID"): s for s in (health or {}).get("Servers") or []}
        member_status = {m.name: m.status for m in members.members}
        member_version = {m.name: m.version for m in members.members}
        for s in raft.get("Servers") or []:
            h = by_id.get(s.get("ID"), {})
            name = s.get("Node", "")
            info = ServerInfo(
                name=name,
                address=s.get("Address", ""),
                id=s.get("ID", ""),
                voter=bool(s.get("Voter")),
                leader=bool(s.get("Leader")),
                # This agent's gossip view first: autopilot refreshes its copy only every few seconds.
                serf_status=member_status.get(name) or h.get("SerfStatus"),
                healthy=h.get("Healthy"),
                last_contact_ms=parse_duration_ms(h.get("LastContact")) if h else None,
                version=h.get("Version") or member_version.get(name),
            )
            out.servers.append(info)
        if not out.servers:  # raft config unreadable: fall back to gossip's view of servers
            for m in members.members:
                if m.role == "server" and m.status in ("alive", "failed"):
                    out.servers.append(ServerInfo(name=m.name, address=m.addr, serf_status=m.status, version=m.version))
        out.count = len(out.servers)
        out.voters = sum(1 for s in out.servers if s.voter)
        out.leader = next((s.name for s in out.servers if s.leader), None)
        out.failure_tolerance = health.get("FailureTolerance") if health else None
        out.healthy = health.get("Healthy") if health else None
        out.autopilot_config = dict(ap_conf)
        out.cleanup_dead_servers = ap_conf.get("CleanupDeadServers") if ap_conf else None
        out.last_contact_threshold_ms = parse_duration_ms(ap_conf.get("LastContactThreshold")) if ap_conf else None
        contacts = [
            s.last_contact_ms
            for s in out.servers
            if not s.leader and s.last_contact_ms is not None and s.serf_status in (None, "alive")
        ]
        out.max_last_contact_ms = max(contacts) if contacts else None
        out.dead = [s.name for s in out.servers if s.serf_status not in (None, "alive")]
        return out

    @staticmethod
    def _agent_config(debug: dict, stats: dict, cluster: ClusterInfo, agent_self: dict) -> AgentConfig:
        out = AgentConfig(server=cluster.agent_is_server, dev_mode=cluster.dev_mode)
        election = parse_duration_ms(debug.get("ConsulRaftElectionTimeout"))
        out.raft_election_timeout_ms = election
        if election is not None:
            # Consul scales its 1 s base election timeout by performance.raft_multiplier.
            out.raft_multiplier = round(election / 1000.0, 2)
        encrypted = (stats.get("serf_lan") or {}).get("encrypted")
        out.gossip_encrypted = None if encrypted is None else encrypted == "true"
        if "ACLsEnabled" in debug:
            out.acls_enabled = bool(debug.get("ACLsEnabled"))
        else:
            acl = (stats.get("consul") or {}).get("acl")
            out.acls_enabled = None if acl is None else acl != "disabled"
        out.gossip_probe_interval_ms = parse_duration_ms(debug.get("GossipLANProbeInterval"))
        out.gossip_probe_timeout_ms = parse_duration_ms(debug.get("GossipLANProbeTimeout"))
        out.gossip_interval_ms = parse_duration_ms(debug.get("GossipLANGossipInterval"))
        mult = debug.get("GossipLANSuspicionMult")
        out.gossip_suspicion_mult = int(mult) if isinstance(mult, (int, float)) else None
        addr = (agent_self.get("Member") or {}).get("Addr") or ""
        out.bind_loopback = addr.startswith("127.") or addr == "::1"
        return out

    @staticmethod
    def _services(results: dict, kv: dict) -> tuple[list[FoundationService], dict]:
        specs: dict[str, dict] = {}
        for entry in kv.get("services") or []:
            key = entry.get("Key", "")[len(keys.SERVICES) :]
            if not key or "/" in key:
                continue
            try:
                specs[key] = json.loads(_kv_value(entry) or "{}")
            except ValueError:
                specs[key] = {}
        raw = results.get("services") or {}
        ui = raw.get("ui")
        counts = {"services": 0, "instances": 0}
        catalog: dict[str, dict] = {}
        if ui is not None:
            for s in ui:
                catalog[s.get("Name", "")] = s
            counts["services"] = len(ui)
            counts["instances"] = sum(int(s.get("InstanceCount") or 0) for s in ui)
        else:
            counts["services"] = len(raw.get("names") or {})
        out = []
        for name in sorted(specs):
            spec = specs[name]
            s = catalog.get(name, {})
            out.append(
                FoundationService(
                    name=name,
                    mode=spec.get("mode") if isinstance(spec, dict) else None,
                    spec=True,
                    instances=int(s.get("InstanceCount") or 0),
                    nodes=sorted(s.get("Nodes") or []),
                    passing=int(s.get("ChecksPassing") or 0),
                    warning=int(s.get("ChecksWarning") or 0),
                    critical=int(s.get("ChecksCritical") or 0),
                )
            )
        return out, counts

    def _merge_history(self, raw: dict) -> dict:
        """Carry check transitions across snapshots (``--watch``, the agent task) within ``history_s``.

        A status that differs from the one seen at the end of the previous
        snapshot counts as a transition too; transitions older than the
        horizon are forgotten, so the flapping list describes the recent past.
        """
        if not raw:
            return raw
        now = time.monotonic()
        if self._history_started is None:
            self._history_started = now
        sequences = raw.get("sequences") or {}
        current = {(c.get("Node", ""), c.get("CheckID", "")): c.get("Status", "") for c in raw.get("last") or []}
        previous, transitions = self._last_status, self._transitions
        if previous:
            for key, status in current.items():
                before = previous.get(key)
                seq = sequences.get(key)
                first = seq[0] if seq else status
                if before is not None and before != first:
                    transitions.setdefault(key, []).append((now, before, first))
        for key, seq in sequences.items():
            for before, after in zip(seq, seq[1:], strict=False):
                transitions.setdefault(key, []).append((now, before, after))
        for key in list(transitions):
            kept = [t for t in transitions[key] if now - t[0] <= self.history_s] if key in current else []
            if kept:
                transitions[key] = kept
            else:
                del transitions[key]
        self._last_status = current
        merged = {key: [ts[0][1]] + [t[2] for t in ts] for key, ts in transitions.items()}
        elapsed = max(float(raw.get("elapsed") or 0.0), min(now - self._history_started, self.history_s))
        return {**raw, "sequences": merged, "elapsed": elapsed}

    @staticmethod
    def _checks(raw: dict, window: float) -> Checks:
        out = Checks(samples=int(raw.get("samples") or 0))
        last = raw.get("last") or []
        out.total = len(last)
        out.by_state = dict(Counter(c.get("Status", "") for c in last))
        for key, seq in (raw.get("sequences") or {}).items():
            if len(seq) - 1 < FLAP_MIN_TRANSITIONS:
                continue
            meta = (raw.get("meta") or {}).get(key, {})
            out.flapping.append(
                FlappingCheck(
                    node=key[0],
                    check_id=key[1],
                    name=meta.get("Name", ""),
                    service=meta.get("ServiceName", ""),
                    type=meta.get("Type", "") or "",
                    transitions=len(seq) - 1,
                    statuses=seq[-8:],
                    window_s=round(float(raw.get("elapsed") or window), 2),
                )
            )
        out.flapping.sort(key=lambda f: (-f.transitions, f.node, f.check_id))
        return out

    @staticmethod
    def _churn(raw: dict, counts: dict) -> Churn:
        indexes = raw.get("indexes") or []
        elapsed = float(raw.get("elapsed") or 0.0)
        out = Churn(window_s=round(elapsed, 3))
        if indexes:
            out.index_start, out.index_end = indexes[0], indexes[-1]
            out.changes = len(set(indexes)) - 1
        out.per_min = round(out.changes * 60.0 / elapsed, 2) if elapsed > 0 else 0.0
        out.services = counts.get("services") or len(raw.get("services") or {})
        out.instances = counts.get("instances") or 0
        out.nodes = int(raw.get("nodes") or 0)
        return out

    @staticmethod
    def _events(raw: dict) -> Events:
        snapshots = raw.get("snapshots") or []
        elapsed = float(raw.get("elapsed") or 0.0)
        out = Events(window_s=round(elapsed, 3))
        if not snapshots:
            return out
        first_ids = {e.get("ID") for e in snapshots[0]}
        all_events: dict[str, dict] = {}
        for snap in snapshots:
            for e in snap:
                all_events[e.get("ID")] = e
        last = snapshots[-1]
        out.buffered = len(last)
        out.new = sum(1 for i in all_events if i not in first_ids)
        out.per_min = round(out.new * 60.0 / elapsed, 2) if elapsed > 0 else 0.0
        sizes = []
        for e in last:
            payload = e.get("Payload") or ""
            try:
                size = len(base64.b64decode(payload)) if payload else 0
            except ValueError:
                size = len(payload)
            filters = sum(len(e.get(k) or "") for k in ("NodeFilter", "ServiceFilter", "TagFilter"))
            sizes.append(EVENT_OVERHEAD + 2 * len((e.get("Name") or "").encode()) + size + filters)
        out.max_size_bytes = max(sizes) if sizes else 0
        out.near_limit = sum(1 for s in sizes if s >= 0.8 * EVENT_LIMIT)
        out.by_name = dict(Counter(e.get("Name", "") for e in last).most_common(10))
        return out

    @staticmethod
    def _runtime(metrics: dict) -> Runtime:
        gauges = {g.get("Name"): g.get("Value") for g in metrics.get("Gauges") or []}
        samples = {s.get("Name"): s for s in metrics.get("Samples") or []}
        out = Runtime(
            goroutines=gauges.get("consul.runtime.num_goroutines"),
            alloc_bytes=gauges.get("consul.runtime.alloc_bytes"),
            sys_bytes=gauges.get("consul.runtime.sys_bytes"),
            gc_pause_total_ns=gauges.get("consul.runtime.total_gc_pause_ns"),
        )
        gc = samples.get("consul.runtime.gc_pause_ns")
        if gc:
            out.gc_pause_mean_ms = round(float(gc.get("Mean") or 0) / 1e6, 3)
            out.gc_pause_max_ms = round(float(gc.get("Max") or 0) / 1e6, 3)
        lc = samples.get("consul.raft.leader.lastContact")
        if lc:
            out.leader_last_contact_mean_ms = round(float(lc.get("Mean") or 0), 3)
            out.leader_last_contact_max_ms = round(float(lc.get("Max") or 0), 3)
        return out

    @staticmethod
    def _coordinates(raw: list, agent_self: dict, node: str | None) -> Coordinates:
        out = Coordinates(nodes=len(raw))
        mine = agent_self.get("Coord")
        if not mine:
            mine = next((c.get("Coord") for c in raw if c.get("Node") == node), None)
        if not mine:
            return out
        rtts: list[tuple[float, str]] = []
        for c in raw:
            if c.get("Node") == node or not c.get("Coord"):
                continue
            rtts.append((vivaldi_rtt_ms(mine, c["Coord"]), c.get("Node", "")))
        if rtts:
            values = [r for r, _ in rtts]
            out.rtt_p50_ms = round(_percentile(values, 0.5) or 0.0, 3)
            out.rtt_p99_ms = round(_percentile(values, 0.99) or 0.0, 3)
            worst = max(rtts)
            out.rtt_max_ms, out.max_node = round(worst[0], 3), worst[1]
        return out

    @staticmethod
    def _singleton(entries: list) -> SingletonConfig:
        from foundation_cli.core import durations

        out = SingletonConfig()
        try:
            from foundation_cli.core.timing import Timing

            base = Timing()
            out.defaults = {"lock_delay": base.lock_delay, "fence_timeout": base.fence_timeout}
        except ImportError:  # pragma: no cover
            out.defaults = {}
        for entry in entries:
            key = entry.get("Key", "")[len(keys.CONFIG) :]
            if key not in SINGLETON_KEYS:
                continue
            raw = (_kv_value(entry) or "").strip()
            try:
                seconds: float | None = durations.parse(raw)
            except ValueError:
                try:
                    seconds = float(raw)
                except ValueError:
                    seconds = None
            name = key.split(".", 1)[1]
            setattr(out, f"{name}_s", seconds)
            setattr(out, f"{name}_raw", raw)
            setattr(out, f"{name}_index", entry.get("ModifyIndex"))
        return out


def _kv_value(entry: Any) -> str | None:
    """The decoded value of a raw KV entry (a list of one when read without ?recurse)."""
    if isinstance(entry, list):
        entry = entry[0] if entry else None
    if not isinstance(entry, dict) or entry.get("Value") is None:
        return None
    try:
        return base64.b64decode(entry["Value"]).decode("utf-8", "replace")
    except ValueError:
        return None


def monitor_for(settings, recorder=None, *, timeout: float = 10.0) -> HealthMonitor:
    """A monitor reading the Consul agent ``settings`` point at (one client per worker thread)."""
    from foundation_cli.tools import consul as consul_tool

    return HealthMonitor(
        lambda: consul_tool.connect(settings, recorder=recorder, timeout=timeout),
        consul_addr=settings.address.url,
    )
