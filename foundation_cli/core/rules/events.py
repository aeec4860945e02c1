"""Event rules: payloads near the user-event size limit, high event rates → durable/KV channels."""

from __future__ import annotations

from foundation_cli.core.rules.base import Change, Evidence, Recommendation, rule

EVENT = "https://developer.hashicorp.com/consul/commands/event"
EVENT_API = "https://developer.hashicorp.com/consul/api-docs/event"
HIGH_RATE_PER_MIN = 120.0  # two gossip broadcasts a second, cluster-wide, sustained


@rule("events.payload")
def payload_near_limit(snap) -> list[Recommendation]:
    ev = snap.events
    if ev.near_limit == 0:
        return []
    return [
        Recommendation(
            id="events.payload",
            rule="events.payload",
            severity="info",
            title=f"{ev.near_limit} recent event(s) within 20% of the {ev.limit_bytes}-byte user-event limit",
            reasoning=(
                f"The largest buffered event is about {ev.max_size_bytes} bytes encoded, of a {ev.limit_bytes}-byte "
                "limit (the encoded event counts the name twice plus ~98 bytes of envelope). Events over the limit are "
                "refused, and big events crowd gossip. Foundation channels "
                "spill large payloads to KV automatically; for raw `consul event` senders, put the data in KV and "
                "send only its key."
            ),
            evidence=[
                Evidence("largest buffered event (bytes)", ev.max_size_bytes, "events"),
                Evidence("events near the limit", ev.near_limit, "events"),
            ],
            changes=[
                Change(
                    "send large messages through a Foundation channel (spills to KV) instead of raw events",
                    cli="foundation broadcast <channel> @payload.json --durable",
                )
            ],
            applies="live",
            docs=[EVENT, EVENT_API],
        )
    ]


@rule("events.rate")
def high_rate(snap) -> list[Recommendation]:
    ev = snap.events
    if ev.per_min <= HIGH_RATE_PER_MIN or ev.new < 3:
        return []
    return [
        Recommendation(
            id="events.rate",
            rule="events.rate",
            severity="warning",
            title=f"{ev.per_min:.0f} user events/min: gossip is carrying application traffic",
            reasoning=(
                f"{ev.new} new events arrived in {ev.window_s:g}s. User events are best-effort gossip: "
                "each is re-broadcast by every node, agents keep only the last 256, and a burst can delay "
                "membership messages. For steady streams use a durable channel (KV history, read with "
                "blocking queries) and keep events for rare notifications."
            ),
            evidence=[
                Evidence("new events in window", ev.new, "events"),
                Evidence("events per minute", ev.per_min, "events"),
                Evidence("busiest names", ev.by_name, "events"),
            ],
            changes=[
                Change(
                    "publish with --durable and let consumers catch up from KV (`listen --since`)",
                    cli="foundation broadcast <channel> <message> --durable",
                )
            ],
            applies="live",
            docs=[EVENT, EVENT_API],
        )
    ]
