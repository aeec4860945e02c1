"""Check rules: flapping checks → success_before_passing / failures_before_critical."""

from __future__ import annotations

from foundation_cli.core.rules.base import Change, Evidence, Recommendation, hcl, rule

CHECKS = "https://developer.hashicorp.com/consul/docs/agent/checks"
# Check types that honour success_before_passing / failures_before_critical (Consul 1.7+).
THRESHOLD_TYPES = {"http", "tcp", "grpc", "docker", "script", "monitor"}


@rule("checks.flapping")
def flapping(snap) -> list[Recommendation]:
    """A check whose status changed at least twice within the observation window."""
    out = []
    for f in snap.checks.flapping[:20]:
        subject = f"{f.node}/{f.check_id}"
        ttl = f.type == "ttl"
        thresholds = (f.type or "").lower() in THRESHOLD_TYPES
        if ttl:
            change = Change(
                "a TTL check flips when its writer does: debounce in the application (only report a status after "
                "it held for N intervals), or lengthen the TTL",
                nodes=[f.node],
            )
        else:
            change = Change(
                f"in the definition of check {f.check_id!r} on {f.node}, then `consul reload` on that node",
                config=hcl({"check": {"id": f.check_id, "success_before_passing": 3, "failures_before_critical": 3}}),
                nodes=[f.node],
                cli="consul reload   # on " + f.node,
            )
        out.append(
            Recommendation(
                id=f"checks.flapping:{subject}",
                rule="checks.flapping",
                severity="warning",
                title=f"check {f.check_id!r} on {f.node} flapped {f.transitions} times in {f.window_s:g}s",
                reasoning=(
                    f"Its status went {' → '.join(f.statuses)}. Every change is a Raft write, wakes every "
                    "blocking query on the service's health, and moves traffic (DNS, discovery) back and forth. "
                    + (
                        "Consul can require several consecutive results before changing status "
                        "(success_before_passing, failures_before_critical), which absorbs transient failures."
                        if thresholds or not ttl
                        else "TTL checks have no thresholds in Consul; the fix belongs to whatever updates the TTL."
                    )
                ),
                evidence=[
                    Evidence("status transitions observed", f.transitions, "health_checks"),
                    Evidence("observation window", f"{f.window_s:g}s", "health_checks"),
                    Evidence("check type", f.type or "unknown", "health_checks"),
                ],
                changes=[change],
                applies="live",
                auto=False,
                docs=[CHECKS],
            )
        )
    return out
