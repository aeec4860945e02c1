"""What a health snapshot holds: plain dataclasses, JSON-ready (``status --json``, the optimizer's input).

Every number keeps a reference to the raw read it came from (:func:`read_ref`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
