"""Singleton timing rules: lock-delay / fence timeout versus safety and the cluster's size and churn.

The seed's "sync interval" rule, mapped to Foundation: a singleton fails over
after gossip failure detection plus the session lock-delay; the holder fences
itself after ``fence_timeout`` without Consul. Small, busy clusters want fast
failover; large, stable ones want fewer lock hand-offs on every blip.
"""

from __future__ import annotations

import math

from foundation_cli.core import durations, keys
from foundation_cli.core.rules.base import Change, Evidence, Recommendation, rule

SESSIONS = "https://developer.hashicorp.com/consul/docs/dynamic-app-config/sessions"
SESSION_API = "https://developer.hashicorp.com/consul/api-docs/session"
GOSSIP = "https://developer.hashicorp.com/consul/docs/reference/agent/configuration-file/gossip"

SMALL_CLUSTER = 7
LARGE_CLUSTER = 50
FAST_LOCK_DELAY = 5.0  # above this a small cluster waits longer than it needs to
MIN_CALM_LOCK_DELAY = 1.0


def detection_seconds(snap) -> float:
    """memberlist's failure detection: one probe interval plus the suspicion timeout (mult × log10(n) × interval)."""
    interval = (snap.agent.gossip_probe_interval_ms or 1000.0) / 1000.0
    mult = snap.agent.gossip_suspicion_mult or 4
    n = max(1, snap.members.by_state.get("alive", 0) + snap.members.by_state.get("failed", 0))
    return interval + mult * max(1.0, math.log10(n)) * interval


def _effective(snap) -> tuple[float, float]:
    s = snap.singleton
    lock = s.lock_delay_s if s.lock_delay_s is not None else s.defaults.get("lock_delay", 2.5)
    fence = s.fence_timeout_s if s.fence_timeout_s is not None else s.defaults.get("fence_timeout", 1.2)
    return lock, fence


def _set_lock_delay(snap, seconds: float, why: str) -> Change:
    text = durations.format(seconds)
    index = snap.singleton.lock_delay_index
    return Change(
        why,
        method="PUT",
        path=f"/v1/kv/{keys.CONFIG}singleton.lock_delay",
        params=[("cas", str(index if index is not None else 0))],
        body=text.encode(),
        cli=f"foundation config set singleton.lock_delay {text} --cluster-wide",
    )


def _evidence(snap) -> list[Evidence]:
    s = snap.singleton
    lock, fence = _effective(snap)
    return [
        Evidence(
            "singleton.lock_delay",
            s.lock_delay_raw if s.lock_delay_raw is not None else f"{lock:g}s (default)",
            "kv_singleton_config",
        ),
        Evidence(
            "singleton.fence_timeout",
            s.fence_timeout_raw if s.fence_timeout_raw is not None else f"{fence:g}s (default)",
            "kv_singleton_config",
        ),
    ]


@rule("singleton.timing")
def unsafe_timing(snap) -> list[Recommendation]:
    """fence timeout + kill grace + margin must stay below lock-delay, or a cut-off holder overlaps its successor."""
    s = snap.singleton
    if s.lock_delay_s is None and s.fence_timeout_s is None:
        return []
    lock, fence = _effective(snap)
    try:
        from foundation_cli.core.live_settings import check_timing
        from foundation_cli.core.timing import Timing
    except ImportError:  # pragma: no cover
        return []
    problem = check_timing({"singleton.lock_delay": lock, "singleton.fence_timeout": fence})
    if not problem:
        return []
    base = Timing()
    need = fence + base.fence_kill_grace + base.fence_margin
    target = math.ceil((need + 0.5) * 2) / 2
    return [
        Recommendation(
            id="singleton.timing",
            rule="singleton.timing",
            severity="critical",
            title=f"singleton lock-delay {lock:g}s is too short for fence timeout {fence:g}s: two holders can overlap",
            reasoning=(
                f"A holder cut off from Consul keeps running up to fence timeout + kill grace + margin = {need:g}s "
                f"after its last confirmation, but a new holder may take the lock {lock:g}s after the session is "
                f"invalidated. Raise lock-delay to {target:g}s (or lower the fence timeout). ({problem})"
            ),
            evidence=_evidence(snap),
            changes=[_set_lock_delay(snap, target, "raise the lock-delay of new singleton sessions (cluster-wide)")],
            applies="next-session",
            auto=True,
            docs=[SESSIONS, SESSION_API],
        )
    ]


@rule("singleton.failover")
def failover_speed(snap) -> list[Recommendation]:
    """Small clusters running singletons: keep lock-delay short so failover is detection + a few seconds."""
    singletons = [s.name for s in snap.services if s.mode == "singleton"]
    alive = snap.members.by_state.get("alive", 0)
    lock, fence = _effective(snap)
    if not singletons or alive > SMALL_CLUSTER or lock <= FAST_LOCK_DELAY:
        return []
    detect = detection_seconds(snap)
    try:
        from foundation_cli.core.timing import Timing

        base = Timing()
        target = max(base.lock_delay, math.ceil((fence + base.fence_kill_grace + base.fence_margin + 0.1) * 2) / 2)
    except ImportError:  # pragma: no cover
        target = 2.5
    if target >= lock:
        return []
    return [
        Recommendation(
            id="singleton.failover",
            rule="singleton.failover",
            severity="warning" if detect + lock > 15 else "info",
            title=f"singleton failover ≈ {detect + lock:.0f}s; lock-delay {lock:g}s could be {target:g}s",
            reasoning=(
                f"This cluster is small ({alive} alive members) and runs {len(singletons)} singleton(s) "
                f"({', '.join(singletons[:5])}). After a crash a singleton restarts elsewhere after gossip failure "
                f"detection (≈{detect:.1f}s here, from probe interval and suspicion multiplier) plus the session "
                f"lock-delay ({lock:g}s). A small cluster has few lock contenders, so a short lock-delay costs "
                f"little; {target:g}s still keeps the fence safe (fence timeout {fence:g}s)."
            ),
            evidence=[
                *_evidence(snap),
                Evidence("alive members", alive, "members"),
                Evidence("singleton services", ", ".join(singletons), "kv_services"),
                Evidence("estimated failure detection", f"{detect:.1f}s", "agent_self"),
            ],
            changes=[_set_lock_delay(snap, target, "shorten the lock-delay of new singleton sessions (cluster-wide)")],
            applies="next-session",
            auto=True,
            docs=[SESSIONS, SESSION_API, GOSSIP],
        )
    ]


@rule("singleton.chatter")
def calm_large_cluster(snap) -> list[Recommendation]:
    """Large, stable clusters: a sub-second lock-delay lets a blipping node bounce locks around."""
    alive = snap.members.by_state.get("alive", 0)
    lock, _fence = _effective(snap)
    singletons = [s.name for s in snap.services if s.mode == "singleton"]
    if not singletons or alive < LARGE_CLUSTER or lock >= MIN_CALM_LOCK_DELAY or snap.churn.per_min >= 1.0:
        return []
    target = max(2.5, snap.singleton.defaults.get("lock_delay", 2.5))
    return [
        Recommendation(
            id="singleton.chatter",
            rule="singleton.chatter",
            severity="info",
            title=f"lock-delay {lock:g}s in a large, stable cluster: singletons may bounce on every blip",
            reasoning=(
                f"{alive} members and a catalog churn of {snap.churn.per_min:g}/min: failures are rare here, "
                "while a short lock-delay lets a node that blips (GC pause, brief partition) lose and re-win locks, "
                "each a Raft write and a process restart. A few seconds of lock-delay costs little failover time "
                "and removes that churn."
            ),
            evidence=[
                *_evidence(snap),
                Evidence("alive members", alive, "members"),
                Evidence("catalog churn per minute", snap.churn.per_min, "catalog_services"),
            ],
            changes=[_set_lock_delay(snap, target, "lengthen the lock-delay of new singleton sessions (cluster-wide)")],
            applies="next-session",
            auto=True,
            docs=[SESSIONS, SESSION_API],
        )
    ]
