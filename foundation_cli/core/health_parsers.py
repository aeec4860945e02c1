"""Turning raw Consul answers into the snapshot's parts (pure functions, unit-tested)."""

from __future__ import annotations

import base64
import json
import math
import re
from collections import Counter
from typing import Any

from foundation_cli.core import durations, keys
from foundation_cli.core.health_models import (
    EVENT_LIMIT,
    EVENT_OVERHEAD,
    FLAP_MIN_TRANSITIONS,
    MEMBER_STATES,
    SINGLETON_KEYS,
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
    SingletonConfig,
)
from foundation_cli.core.timing import Timing


def parse_duration_ms(text: Any) -> float | None:
    """Go duration text (``"1.5s"``, ``"200ms"``, ``"1m0s"``, ``"350µs"``) → milliseconds."""
    if text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) / 1e6  # Go durations in JSON numbers are nanoseconds
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


def members(raw: list) -> Members:
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


def servers(results: dict, members: Members) -> Servers:
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


def agent_config(debug: dict, stats: dict, cluster: ClusterInfo, agent_self: dict) -> AgentConfig:
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


def services(results: dict, kv: dict) -> tuple[list[FoundationService], dict]:
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


def checks(raw: dict, window: float) -> Checks:
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


def churn(raw: dict, counts: dict) -> Churn:
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


def events(raw: dict) -> Events:
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


def runtime(metrics: dict) -> Runtime:
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


def coordinates(raw: list, agent_self: dict, node: str | None) -> Coordinates:
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


def singleton(entries: list) -> SingletonConfig:
    out = SingletonConfig()
    base = Timing()
    out.defaults = {"lock_delay": base.lock_delay, "fence_timeout": base.fence_timeout}
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
