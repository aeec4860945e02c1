"""Channels: broadcast messages to every node over Consul user events (``foundation broadcast`` / ``listen``).

What Consul gives: a user event is gossiped to every agent (filtered by node,
service, tag), best effort, with a 512-byte limit, and each agent keeps only
the last 256 events of any name in memory (``/v1/event/list``). What this
facade adds, without hiding it:

- an envelope (id, time, sender, content type) in each ``foundation:<channel>`` event;
- payloads too big for an event are stored in KV (``foundation/channels/<ch>/blobs/<id>``)
  and the event carries a reference the listener resolves and verifies; stored
  copies older than :data:`BLOB_RETENTION` are deleted by the next broadcaster that spills;
- ``durable`` messages are also kept in a bounded KV history
  (``…/history/<id>``, newest :data:`HISTORY_MAX`) that ``listen --since`` replays;
- ``listen`` uses blocking queries on the event list and de-duplicates by event id
  (``consul watch -type=event`` hands its handler the whole list on every change).

Delivery: at most once per listener for live messages; a message can be missed
(listener down, agent restarted, more than 256 events reaching the agent between
two reads, gossip loss). Durable channels let a late or restarted listener catch up.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from foundation_cli.core import channel_gc
from foundation_cli.core import envelope as env_mod
from foundation_cli.core.channel_gc import BLOB_RETENTION
from foundation_cli.core.envelope import Envelope, Since
from foundation_cli.errors import FoundationError, PermissionDeniedError, UsageError

HISTORY_MAX = 100  # messages kept per durable channel
KV_VALUE_LIMIT = 512 * 1024  # Consul's default kv_max_value_size
GC_BATCH = 32  # most deletes one broadcast performs
EVENT_BUFFER = 256  # events each Consul agent keeps (all names together)
RESOLVE_WAIT = 5.0  # seconds a listener waits for a spilled payload whose event came first
CONTENT_TYPES = ("text/plain", "application/json", "application/octet-stream")


def validate_filters(node: str | None, service: str | None, tag: str | None) -> None:
    """Check event filters the way Consul will use them (regular expressions; tag needs service)."""
    import re

    for what, value in (("--node", node), ("--service", service), ("--tag", tag)):
        if value is None:
            continue
        if not value:
            raise UsageError(f"{what} must not be empty")
        try:
            re.compile(value)
        except re.error as exc:
            raise UsageError(f"{what} {value!r} is not a valid regular expression: {exc}") from None
    if tag is not None and service is None:
        raise UsageError("--tag needs --service", hint="Consul filters events by tag only within a service")


@dataclass
class BroadcastResult:
    """What a broadcast did (``broadcast --json``)."""

    id: str
    channel: str
    event: str
    event_id: str | None
    size: int
    inline: bool
    durable: bool
    stored: list[str] = field(default_factory=list)
    filters: dict = field(default_factory=dict)
    deleted: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "id": self.id,
            "channel": self.channel,
            "event": self.event,
            "event_id": self.event_id,
            "size": self.size,
            "inline": self.inline,
            "durable": self.durable,
            "stored": self.stored,
            "filters": self.filters,
            "garbage_collected": self.deleted,
        }


class Channels:
    """Channel operations on a connected, recording Consul client."""

    def __init__(self, client) -> None:
        self.client = client
        self._node: str | None = None

    # -- sending -------------------------------------------------------------------
    def sender_node(self) -> str:
        """The Consul node name of the agent we talk to (the envelope's sender)."""

        if self._node is None:
            info = self.client.agent.self()
            self._node = str((info.get("Config") or {}).get("NodeName") or "")
        return self._node

    def broadcast(
        self,
        channel: str,
        data: bytes,
        *,
        content_type: str = "text/plain",
        node: str | None = None,
        service: str | None = None,
        tag: str | None = None,
        durable: bool = False,
        now: float | None = None,
    ) -> BroadcastResult:
        """Fire ``foundation:<channel>``; spill to KV when the envelope does not fit in an event."""

        env_mod.validate_channel(channel)
        validate_filters(node, service, tag)
        now = time.time() if now is None else now
        message = Envelope(
            id=env_mod.new_id(now),
            time=now,
            sender=self.sender_node(),
            content_type=content_type,
            data=data,
            channel=channel,
        )
        full = message.to_wire()
        if len(full) > KV_VALUE_LIMIT - 1024:
            raise UsageError(
                f"message too large: {len(full)} bytes encoded; a channel message must fit one KV value "
                f"({KV_VALUE_LIMIT // 1024} KiB)",
                hint="store large data elsewhere (e.g. `foundation kv put`) and broadcast its key",
            )
        budget = env_mod.inline_budget(channel, node=node, service=service, tag=tag)
        result = BroadcastResult(
            id=message.id,
            channel=channel,
            event=env_mod.event_name(channel),
            event_id=None,
            size=len(data),
            inline=len(full) <= budget,
            durable=durable,
            filters={k: v for k, v in (("node", node), ("service", service), ("tag", tag)) if v is not None},
        )
        wire = full
        if durable:
            key = env_mod.channel_key(channel, "history", message.id)
            self.client.kv.put(key, full)
            result.stored.append(key)
            if not result.inline:
                wire = message.as_reference("history").to_wire()
        spill_key = None
        if not durable and not result.inline:
            spill_key = env_mod.channel_key(channel, "blobs", message.id)
            result.stored.append(spill_key)
            wire = message.as_reference("blobs").to_wire()
        if len(wire) > budget:
            raise UsageError(
                f"the event for channel {channel!r} cannot fit even a reference ({len(wire)} > {budget} bytes)",
                hint="use a shorter channel name or shorter --node/--service/--tag filters",
            )
        if spill_key is None:
            reply = self.client.event.fire(result.event, wire, node=node, service=service, tag=tag)
        else:
            reply = self._fire_while_storing(result.event, wire, spill_key, full, node=node, service=service, tag=tag)
        result.event_id = (reply or {}).get("ID")
        if durable:
            result.deleted += self._trim_history(channel)
        if not result.inline and not durable:
            result.deleted += self._gc_blobs(channel, now)
        return result

    def _fire_while_storing(self, event: str, wire: bytes, key: str, full: bytes, **filters) -> dict:
        """Fire the reference event while the spilled payload is being stored, not after.

        A KV write is a Raft commit (a round trip to the leader and a quorum's disk), the event a
        gossip: done one after the other, a spilled message reached listeners their sum later; at
        once, the later of the two. A listener that gets the event first waits for the key
        (:meth:`resolve`). A dry run writes them in the safe order, so its script replays the same.
        """
        from foundation_cli.raw.recorder import current_recorder

        if current_recorder().dry_run:
            self.client.kv.put(key, full)
            return self.client.event.fire(event, wire, **filters)
        import contextvars

        failed: list[BaseException] = []

        def store() -> None:
            try:
                self.client.kv.put(key, full)
            except BaseException as exc:  # noqa: BLE001 - raised below, in the caller's thread
                failed.append(exc)

        storing = threading.Thread(target=contextvars.copy_context().run, args=(store,), daemon=True)
        storing.start()
        try:
            reply = self.client.event.fire(event, wire, **filters)
        finally:
            storing.join()
        if failed:
            raise failed[0]
        return reply

    def _stored_ids(self, channel: str, area: str) -> list[str]:

        prefix = env_mod.channel_key(channel, area)
        _index, found = self.client.kv.get(prefix, keys=True)
        return sorted(k[len(prefix) :] for k in (found or []) if k.startswith(prefix))

    def _delete(self, channel: str, area: str, ids: list[str]) -> list[str]:

        deleted = []
        for message_id in ids[:GC_BATCH]:
            key = env_mod.channel_key(channel, area, message_id)
            self.client.kv.delete(key)
            deleted.append(key)
        return deleted

    def _gc_blobs(self, channel: str, now: float) -> list[str]:
        """Delete spilled payloads older than :data:`BLOB_RETENTION` (ids embed their send time)."""
        old = [i for i in self._stored_ids(channel, "blobs") if (env_mod.id_time(i) or 0.0) < now - BLOB_RETENTION]
        return self._delete(channel, "blobs", old)

    def _trim_history(self, channel: str) -> list[str]:
        """Keep the newest :data:`HISTORY_MAX` messages of a durable channel."""
        ids = self._stored_ids(channel, "history")
        return self._delete(channel, "history", ids[: max(0, len(ids) - HISTORY_MAX)])

    def collect_garbage(self, now: float | None = None, *, limit: int = 256) -> list[str]:
        """Delete spilled payloads older than :data:`BLOB_RETENTION` on every channel (the agent's sweep)."""
        return channel_gc.collect_garbage(self.client, now, limit=limit)

    # -- receiving -----------------------------------------------------------------
    def resolve(self, message: Envelope) -> Envelope:
        """Fetch and verify the KV copy a reference points at (``data`` stays ``None`` if it is gone)."""

        if not message.ref:
            return message
        key = env_mod.channel_key(message.channel, message.ref, message.id)
        # The copy was committed before the event was fired: any server usually has it already, so ask
        # the nearest one (?stale) and go to the leader only if that one is behind.
        _index, item = self.client.kv.get(key, consistency="stale")
        if item is None:
            index, item = self.client.kv.get(key)
            # The broadcaster stores a spilled payload while its event travels (_fire_while_storing):
            # an event can arrive first, so wait a moment for the key (blocking query, wakes on writes).
            deadline = time.monotonic() + RESOLVE_WAIT
            while item is None and index and (left := deadline - time.monotonic()) > 0:
                index, item = self.client.kv.get(key, index=index, wait=f"{max(10, int(left * 1000))}ms")
        if item is None or item.get("Value") is None:
            message.via = "missing"
            message.extra["error"] = f"payload expired or deleted from KV ({key})"
            return message
        try:
            full = Envelope.from_wire(item["Value"])
            message.verify(full)
        except ValueError as exc:
            message.via = "missing"
            message.extra["error"] = str(exc)
            return message
        full.channel, full.event_id, full.via = message.channel, message.event_id, f"kv:{message.ref}"
        return full

    def history(self, channel: str, since: Since) -> list[Envelope]:
        """Durable messages matching ``since``, oldest first (``listen --since``)."""

        env_mod.validate_channel(channel)
        prefix = env_mod.channel_key(channel, "history")
        _index, items = self.client.kv.get(prefix, recurse=True)
        out = []
        for item in sorted(items or [], key=lambda i: i["Key"]):
            try:
                message = Envelope.from_wire(item.get("Value"))
            except ValueError:
                continue
            if since.includes(message.id, message.time):
                message.channel, message.via = channel, "history"
                out.append(message)
        return out

    def _decode_event(self, channel: str, event: dict) -> Envelope:
        payload = event.get("Payload")
        try:
            message = Envelope.from_wire(payload)
        except ValueError:
            # A raw `consul event -name foundation:<ch>`: pass it on as it is (leaky by design).
            message = Envelope(
                id=str(event.get("ID")),
                time=time.time(),
                sender="",
                content_type="application/octet-stream",
                data=payload or b"",
                via="raw-event",
            )
        message.channel, message.event_id = channel, event.get("ID")
        if message.via == "event" and message.ref:
            message = self.resolve(message)
        return message

    def listen(
        self,
        channel: str,
        *,
        since: Since | None = None,
        stop: threading.Event | None = None,
        wait: float = 30.0,
        deadline: float | None = None,
        on_ready: Callable[[str], None] | None = None,
        on_gap: Callable[[str], None] | None = None,
    ) -> Iterator[Envelope]:
        """Yield messages as they arrive, de-duplicated by event id and message id, in agent order.

        Events already in the agent's buffer when listening starts are not
        delivered (they are in the past); ``since`` replays the durable history
        first. Returns when ``stop`` is set or ``deadline`` (a ``time.time()``) passes.
        """

        env_mod.validate_channel(channel)
        name = env_mod.event_name(channel)
        stop = stop or threading.Event()
        index, events = self.client.event.list(name=name)
        seen_events = {e.get("ID") for e in events or []}
        newest = (events or [{}])[-1].get("ID") if events else None
        seen_messages: set[str] = set()
        failures = 0
        if on_ready:
            on_ready(self.sender_node())
        if since is not None:
            for message in self.history(channel, since):
                seen_messages.add(message.id)
                yield message
        while not stop.is_set():
            remaining = None if deadline is None else deadline - time.time()
            if remaining is not None and remaining <= 0:
                return
            step = wait if remaining is None else max(1.0, min(wait, remaining))
            try:
                index, events = self.client.event.list(name=name, index=index, wait=f"{int(step)}s")
                failures = 0
            except (PermissionDeniedError, UsageError):
                raise
            except FoundationError as exc:
                # A listener runs for days: ride through a restarting agent or a leader election.
                failures += 1
                if on_gap and failures == 1:
                    on_gap(f"reading events failed ({exc.message}); retrying — messages may be missed meanwhile")
                stop.wait(min(5.0, 0.25 * 2 ** min(failures, 5)))
                continue
            events = events or []
            ids = [e.get("ID") for e in events]
            if newest is not None and newest not in ids and events and on_gap:
                on_gap(
                    f"the agent dropped events since the last read (it keeps only the last {EVENT_BUFFER}); "
                    "messages may have been missed"
                )
            for event in events:
                if event.get("ID") in seen_events:
                    continue
                seen_events.add(event.get("ID"))
                message = self._decode_event(channel, event)
                if message.id in seen_messages:
                    continue
                seen_messages.add(message.id)
                yield message
                if stop.is_set():
                    return
            # An id that left the agent's buffer never comes back: keep the sets bounded.
            seen_events &= set(ids)
            if len(seen_messages) > 4 * EVENT_BUFFER:
                seen_messages = set(sorted(seen_messages)[-2 * EVENT_BUFFER :])
            newest = ids[-1] if ids else newest
