"""Gossip tuning, only when measured round-trip times justify it (Consul calls these settings advanced)."""

from __future__ import annotations

import math

from foundation_cli.core.rules.base import Change, Evidence, Recommendation, hcl, ms, rule

GOSSIP = "https://developer.hashicorp.com/consul/docs/reference/agent/configuration-file/gossip"
COORDINATES = "https://developer.hashicorp.com/consul/docs/architecture/coordinates"
MIN_NODES = 3  # coordinates of fewer nodes say little about the network


@rule("gossip.probe_timeout")
def probe_timeout(snap) -> list[Recommendation]:
    """probe_timeout below the measured p99 RTT: healthy nodes are suspected (false failures, flapping)."""
    c = snap.coordinates
    timeout = snap.agent.gossip_probe_timeout_ms or 500.0
    if c.nodes < MIN_NODES or c.rtt_p99_ms is None or c.rtt_p99_ms <= timeout:
        return []
    target = int(math.ceil(c.rtt_p99_ms * 1.5 / 100.0) * 100)
    interval = snap.agent.gossip_probe_interval_ms or 1000.0
    block = {"probe_timeout": f"{target}ms"}
    if target >= interval:
        block["probe_interval"] = f"{int(target * 2)}ms"
    return [
        Recommendation(
            id="gossip.probe_timeout",
            rule="gossip.probe_timeout",
            severity="warning",
            title=f"measured p99 RTT {ms(c.rtt_p99_ms)} exceeds gossip probe_timeout {ms(timeout)}",
            reasoning=(
                f"From the network coordinates of {c.nodes} nodes, the estimated round trip from this agent has "
                f"p50 {ms(c.rtt_p50_ms)}, p99 {ms(c.rtt_p99_ms)}, max {ms(c.rtt_max_ms)} (to {c.max_node}). "
                "Consul's gossip reference says probe_timeout should be about the 99th-percentile RTT; with a "
                "shorter timeout, direct probes of healthy nodes time out and fall back to indirect probes and "
                "suspicion, which shows up as members flapping between alive and failed. These settings are "
                "advanced: change them on every agent, and only because the measurement above says so."
            ),
            evidence=[
                Evidence("RTT p99 (Vivaldi estimate)", ms(c.rtt_p99_ms), "coordinates"),
                Evidence("coordinates read", c.nodes, "coordinates"),
                Evidence("GossipLANProbeTimeout", ms(timeout), "agent_self"),
            ],
            changes=[Change("on every agent (servers and clients)", config=hcl({"gossip_lan": block}))],
            applies="rolling-restart",
            docs=[GOSSIP, COORDINATES],
        )
    ]
