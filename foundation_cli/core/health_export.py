"""Prometheus text exposition of a HealthMonitor snapshot (``foundation metrics``, ``status --prometheus``).

Same numbers as ``status --json``, named ``foundation_*`` (text format 0.0.4),
so a node_exporter textfile collector or any scraper wrapper can pick them up.
"""

from __future__ import annotations

from foundation_cli.core.health_monitor import Snapshot


def _escape(value: str) -> str:
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float | int | bool) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    return repr(float(value))


class _Exposition:
    def __init__(self) -> None:
        self.lines: list[str] = []
        self._declared: set[str] = set()

    def metric(self, name: str, help_text: str, value, labels: dict[str, str] | None = None, kind: str = "gauge"):
        if value is None:
            return
        full = f"foundation_{name}"
        if full not in self._declared:
            self._declared.add(full)
            self.lines.append(f"# HELP {full} {help_text}")
            self.lines.append(f"# TYPE {full} {kind}")
        label_text = ""
        if labels:
            label_text = "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items())) + "}"
        self.lines.append(f"{full}{label_text} {_num(value)}")


def prometheus(snap: Snapshot) -> str:
    """The snapshot as Prometheus text exposition (one ``# HELP``/``# TYPE`` per metric family)."""
    e = _Exposition()
    s = snap.servers
    e.metric("up", "1 when the snapshot read the agent's own state", "self" not in snap.errors)
    e.metric("servers", "Servers in the Raft configuration", s.count)
    e.metric("raft_voters", "Voting servers in the Raft configuration", s.voters)
    e.metric("raft_leader_known", "1 when the Raft configuration names a leader", s.leader is not None)
    e.metric(
        "autopilot_failure_tolerance", "Servers that can fail without losing quorum (autopilot)", s.failure_tolerance
    )
    e.metric("autopilot_healthy", "Autopilot's overall health verdict", s.healthy)
    e.metric("servers_dead", "Servers whose gossip status is not alive", len(s.dead))
    for server in s.servers:
        if server.last_contact_ms is not None:
            e.metric(
                "server_last_contact_seconds",
                "Time since the server last heard from the leader (autopilot)",
                server.last_contact_ms / 1000.0,
                {"server": server.name},
            )
    for state, count in sorted(snap.members.by_state.items()):
        e.metric("members", "Gossip members by state", count, {"state": state})
    for version, count in sorted(snap.members.versions.items()):
        e.metric("members_version", "Alive members by Consul version", count, {"version": version})
    for state, count in sorted(snap.checks.by_state.items()):
        e.metric("checks", "Health checks by status", count, {"state": state})
    e.metric("checks_flapping", "Checks that changed status at least twice in the window", len(snap.checks.flapping))
    e.metric("sessions", "Consul sessions", snap.sessions.total)
    e.metric("catalog_services", "Service names in the catalog", snap.churn.services)
    e.metric("catalog_instances", "Service instances in the catalog", snap.churn.instances)
    e.metric("catalog_nodes", "Nodes in the catalog", snap.churn.nodes)
    e.metric(
        "catalog_changes_per_minute", "Catalog (services) index changes per minute over the window", snap.churn.per_min
    )
    e.metric("events_per_minute", "New user events per minute over the window", snap.events.per_min)
    e.metric("events_buffered", "User events in the agent's buffer", snap.events.buffered)
    e.metric("event_max_size_bytes", "Largest buffered user event, name plus payload", snap.events.max_size_bytes)
    for svc in snap.services:
        labels = {"service": svc.name, "mode": svc.mode or "unknown"}
        e.metric("service_instances", "Instances of a Foundation service in the catalog", svc.instances, labels)
        e.metric("service_checks_critical", "Critical checks of a Foundation service", svc.critical, labels)
    r = snap.runtime
    e.metric("consul_goroutines", "Goroutines of the Consul agent", r.goroutines)
    e.metric("consul_alloc_bytes", "Heap bytes allocated by the Consul agent", r.alloc_bytes)
    e.metric("consul_sys_bytes", "Bytes obtained from the OS by the Consul agent", r.sys_bytes)
    if r.gc_pause_total_ns is not None:
        e.metric(
            "consul_gc_pause_seconds_total",
            "Total GC pause of the Consul agent",
            r.gc_pause_total_ns / 1e9,
            kind="counter",
        )
    if r.leader_last_contact_max_ms is not None:
        e.metric(
            "raft_leader_last_contact_max_seconds",
            "Leader's max last contact with followers (metrics window)",
            r.leader_last_contact_max_ms / 1000.0,
        )
    c = snap.coordinates
    if c.rtt_p99_ms is not None:
        e.metric(
            "gossip_rtt_p99_seconds", "Estimated p99 RTT from this agent (network coordinates)", c.rtt_p99_ms / 1000.0
        )
    e.metric("snapshot_duration_seconds", "Time taken to read the snapshot", snap.duration_ms / 1000.0)
    e.metric("snapshot_read_errors", "Reads that failed while taking the snapshot", len(snap.errors))
    return "\n".join(e.lines) + "\n"
