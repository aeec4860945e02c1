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
- ``listen`` follows the event list with blocking queries in a reader thread of its own
  (decoding and fetching spilled payloads happen in the caller's thread, so a slow consumer
  does not make it fall behind the agent's buffer) and de-duplicates by event id and message
  id (``consul watch -type=event`` hands its handler the whole list on every change); a second
  reader follows the durable history's keys, so a durable message that never arrived as an
  event is read from KV.

Delivery: each event the listener's agent received is handed out exactly once. Plain
messages can still be missed (listener down, agent restarted, gossip loss, a flood of over
256 events between two reads of the reader thread); durable ones are caught up from the
history while the listener runs (bounded: the newest :data:`HISTORY_MAX`), and replayed
by ``since`` for a late or restarted listener.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from foundation_cli.core import channel_gc
from foundation_cli.core import envelope as env_mod
from foundation_cli.core.channel_gc import BLOB_RETENTION
from foundation_cli.core.envelope import Envelope, Since
from foundation_cli.core.retry import backoff
from foundation_cli.errors import FoundationError, PermissionDeniedError, UsageError

HISTORY_MAX = 100  # messages kept per durable channel
KV_VALUE_LIMIT = 512 * 1024  # Consul's default kv_max_value_size
GC_BATCH = 32  # most deletes one broadcast performs
EVENT_BUFFER = 256  # events each Consul agent keeps (all names together)
RESOLVE_WAIT = 5.0  # seconds a listener waits for a spilled payload whose event came first
CATCH_UP_AFTER = 2.0  # seconds a durable message may take to arrive as an event before it is read from KV
QUEUE_MAX = 4096  # events read but not yet handed out (then the event reader waits: the consumer is behind)
SEEN_MAX = 8192  # message ids remembered for de-duplication (history vs event)
POLL = 0.5  # how often a waiting listener looks at its stop flag
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
            # The stored copy keeps the event's filters (key "f", ignored by older readers): a running
            # listener that reads a durable message from the history delivers it only where Consul would.
            self.client.kv.put(key, _with_filters(full, result.filters))
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
        # The broadcaster stores a spilled payload while its event travels (_fire_while_storing), so
        # the event may come first. Ask the nearest server (?stale); if it has not applied the write
        # yet, wait on it with a blocking query (it wakes when the write lands there): one request
        # when the copy is there, two when the event won. Only a server that stays behind (cut off
        # from the leader) sends us to the leader before the copy is called missing.
        index, item = self.client.kv.get(key, consistency="stale")
        deadline = time.monotonic() + RESOLVE_WAIT
        while item is None and index and (left := deadline - time.monotonic()) > 0:
            wait = f"{max(10, int(left * 1000))}ms"
            index, item = self.client.kv.get(key, index=index, wait=wait, consistency="stale")
        if item is None:
            _index, item = self.client.kv.get(key)
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

    def _history_ids(self, channel: str, client=None, index=None, wait: str | None = None):
        """(index, ids) of the durable history: one ``?keys`` listing, blocking when ``index`` is given."""
        prefix = env_mod.channel_key(channel, "history")
        index, found = (client or self.client).kv.get(prefix, keys=True, index=index, wait=wait)
        ids = [k[len(prefix) :] for k in found or [] if k.startswith(prefix)]
        return index, sorted(i for i in ids if env_mod.ID_RE.match(i))

    def _from_history(self, channel: str, message_id: str) -> Envelope | None:
        """One durable message read from its KV copy (``None`` once trimmed or unreadable)."""
        _index, item = self.client.kv.get(env_mod.channel_key(channel, "history", message_id))
        value = (item or {}).get("Value")
        try:
            message = Envelope.from_wire(value)
        except ValueError:
            return None
        if message.id != message_id:
            return None
        message.channel, message.via = channel, "history"
        message.extra["filters"] = _filters_of(value)
        return message

    def _matches_here(self, filters: dict) -> bool:
        """Whether this node's agent would have stored an event with these filters (Consul's rules).

        ``node``: a regular expression searched in the node name; ``service``: some service
        registered on this agent matches it; ``tag`` (with ``service``): that service has a
        matching tag. A filter Python cannot compile matches nothing (it is not delivered).
        """
        import re

        try:
            if filters.get("node") and not re.search(filters["node"], self.sender_node()):
                return False
            if not filters.get("service"):
                return True
            services = (self.client.agent.services() or {}).values()
            return any(
                re.search(filters["service"], str(s.get("Service", "")))
                and (not filters.get("tag") or any(re.search(filters["tag"], str(t)) for t in s.get("Tags") or []))
                for s in services
            )
        except re.error:
            return False

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
        connect: Callable[[], Any] | None = None,
        catch_up_after: float = CATCH_UP_AFTER,
    ) -> Iterator[Envelope]:
        """Yield messages as they arrive, each once (by event id and message id), in agent order.

        Two reader threads only read and hand over: one follows the agent's event list
        (blocking queries on ``/v1/event/list``), one the channel's durable history
        (blocking ``?keys`` queries on ``…/history/``). Decoding, fetching spilled payloads
        and the caller's work happen here, in the caller's thread, so a slow consumer never
        makes the event reader fall behind the agent's 256-event buffer (the reader waits
        only when :data:`QUEUE_MAX` messages are queued). A durable message whose event has
        not arrived ``catch_up_after`` seconds after its history key appeared (lost in
        gossip, or dropped from a full buffer) is read from the history instead.

        Events already in the agent's buffer when listening starts are not
        delivered (they are in the past); ``since`` replays the durable history
        first. Returns when ``stop`` is set (after what was already read) or
        ``deadline`` (a ``time.time()``) passes. ``connect`` makes the readers'
        own clients (one per thread); without it they share this one's.
        """

        env_mod.validate_channel(channel)
        name = env_mod.event_name(channel)
        stop = stop or threading.Event()
        try:
            history_index, history_ids = self._history_ids(channel)
            history_refused = None
        except PermissionDeniedError as exc:  # a token that may read events but not the channel's KV
            history_index, history_ids, history_refused = None, [], exc
        index, events = self.client.event.list(name=name)
        if on_ready:
            on_ready(self.sender_node())
        seen = _Seen()
        if since is not None:
            for message in self.history(channel, since):
                seen.add(message.id)
                yield message
        inbox: queue.Queue = queue.Queue(maxsize=QUEUE_MAX)
        halt = threading.Event()  # ends the readers when this generator ends, however it ends
        if history_refused is not None and on_gap:
            on_gap(_HistoryReader.refusal(history_refused))
        readers: list[_Reader] = [
            _EventReader(connect() if connect else self.client, name, index, events, inbox, halt, wait, deadline),
        ]
        if history_refused is None:
            readers.append(
                _HistoryReader(
                    connect() if connect else self.client,
                    self,
                    channel,
                    history_index,
                    history_ids,
                    inbox,
                    halt,
                    wait,
                    deadline,
                )
            )
        for reader in readers:
            reader.start()
        pending: dict[str, float] = {}  # durable ids seen in the history but not (yet) as events → when due
        try:
            while True:
                for message_id in [m for m, due in pending.items() if due <= time.monotonic()]:
                    del pending[message_id]
                    caught = self._catch_up(channel, message_id, seen, on_gap)
                    if caught is not None:
                        yield caught
                stopping = stop.is_set()
                if deadline is not None and time.time() >= deadline:
                    return
                if stopping and inbox.empty():
                    return
                timeout = 0.0 if stopping else POLL
                if pending:
                    timeout = min(timeout, max(0.0, min(pending.values()) - time.monotonic()))
                if deadline is not None:
                    timeout = min(timeout, max(0.0, deadline - time.time()))
                try:
                    kind, item = inbox.get(timeout=timeout) if timeout > 0 else inbox.get_nowait()
                except queue.Empty:
                    continue
                if kind == "event":
                    message = self._decode_event(channel, item)
                    pending.pop(message.id, None)
                    if seen.add(message.id):
                        yield message
                elif kind == "durable":
                    if item not in seen:
                        pending.setdefault(item, time.monotonic() + catch_up_after)
                elif kind == "gap":
                    if on_gap:
                        on_gap(item)
                elif kind == "fatal":
                    raise item
        finally:
            halt.set()

    def _catch_up(self, channel: str, message_id: str, seen: _Seen, on_gap) -> Envelope | None:
        if message_id in seen:
            return None
        try:
            message = self._from_history(channel, message_id)
        except FoundationError as exc:
            message = None
            reason = exc.message
        else:
            reason = "trimmed from the history before it could be read"
        if message is None:
            if on_gap:
                on_gap(f"durable message {message_id} missed as an event and {reason}")
            return None
        filters = message.extra.pop("filters", None)
        if filters and not self._matches_here(filters):
            seen.add(message.id)  # not for this node: its event was never meant to reach it
            return None
        return message if seen.add(message.id) else None


def _with_filters(wire: bytes, filters: dict) -> bytes:
    """The stored copy of a durable envelope, with the event's filters (key ``f``) when it has any."""
    if not filters:
        return wire
    import json

    obj = json.loads(wire)
    obj["f"] = filters
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def _filters_of(value: bytes | None) -> dict:
    """The ``f`` filters of a stored copy ({} when none, or not a dict of strings)."""
    import json

    try:
        found = json.loads(value or b"{}").get("f")
    except (ValueError, AttributeError):
        return {}
    if not isinstance(found, dict):
        return {}
    return {k: v for k, v in found.items() if k in ("node", "service", "tag") and isinstance(v, str)}


class _Seen:
    """Message ids already handed out (bounded: the oldest are forgotten first)."""

    def __init__(self, limit: int = SEEN_MAX) -> None:
        self.limit = limit
        self._ids: dict[str, None] = {}

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._ids

    def add(self, message_id: str) -> bool:
        """Remember ``message_id``; whether it is new."""
        if message_id in self._ids:
            return False
        self._ids[message_id] = None
        if len(self._ids) > self.limit:
            del self._ids[next(iter(self._ids))]
        return True


class _Reader(threading.Thread):
    """A thread that reads with blocking queries and puts what it finds in the listener's inbox."""

    what = "reading"

    def __init__(self, client, inbox: queue.Queue, halt: threading.Event, wait: float, deadline: float | None) -> None:
        import contextvars

        super().__init__(daemon=True, name=f"listen-{self.what}")
        self.client, self.inbox, self.halt, self.wait, self.deadline = client, inbox, halt, wait, deadline
        self._context = contextvars.copy_context()  # the run's recorder: --explain shows these requests too

    def put(self, kind: str, item: Any) -> bool:
        """Hand over (waits while the inbox is full: the consumer is that far behind); false once halted."""
        while not self.halt.is_set():
            try:
                self.inbox.put((kind, item), timeout=POLL)
                return True
            except queue.Full:
                continue
        return False

    def run(self) -> None:
        self._context.run(self._loop)

    def _loop(self) -> None:
        failures = 0
        while not self.halt.is_set():
            remaining = None if self.deadline is None else self.deadline - time.time()
            if remaining is not None and remaining <= 0:
                return
            step = self.wait if remaining is None else max(1.0, min(self.wait, remaining))
            try:
                self.read_once(f"{int(step)}s")
                failures = 0
            except (PermissionDeniedError, UsageError) as exc:
                self.refused(exc)
                return
            except FoundationError as exc:
                # A listener runs for days: ride through a restarting agent or a leader election.
                failures += 1
                if failures == 1:
                    self.put("gap", f"{self.what} failed ({exc.message}); retrying — messages may be missed meanwhile")
                self.halt.wait(backoff(failures))
            except BaseException as exc:  # noqa: BLE001 - a bug here must end the listener, loudly
                self.put("fatal", exc)
                return

    def read_once(self, wait: str) -> None:
        raise NotImplementedError

    def refused(self, exc: FoundationError) -> None:
        self.put("fatal", exc)


class _EventReader(_Reader):
    """Follows ``/v1/event/list?name=…`` and hands over each new event once, in the agent's order."""

    what = "reading events"

    def __init__(self, client, name: str, index, events: list[dict], *args) -> None:
        super().__init__(client, *args)
        self.name, self.index = name, index
        self.seen = {e.get("ID") for e in events or []}
        self.newest = events[-1].get("ID") if events else None

    def read_once(self, wait: str) -> None:
        self.index, events = self.client.event.list(name=self.name, index=self.index, wait=wait)
        events = events or []
        ids = [e.get("ID") for e in events]
        if self.newest is not None and self.newest not in ids and events:
            self.put(
                "gap",
                f"the agent dropped events since the last read (it keeps only the last {EVENT_BUFFER}); "
                "messages may have been missed (durable ones are read from the history)",
            )
        for event in events:
            if event.get("ID") in self.seen:
                continue
            self.seen.add(event.get("ID"))
            if not self.put("event", event):
                return
        # An id that left the agent's buffer never comes back: keep the set bounded.
        self.seen &= set(ids)
        self.newest = ids[-1] if ids else self.newest


class _HistoryReader(_Reader):
    """Follows the durable history's keys and hands over each new message id."""

    what = "reading the durable history"

    def __init__(self, client, channels: Channels, channel: str, index, ids: list[str], *args) -> None:
        super().__init__(client, *args)
        self.channels, self.channel, self.index, self.known = channels, channel, index, set(ids)

    def read_once(self, wait: str) -> None:
        index, ids = self.channels._history_ids(self.channel, self.client, index=self.index or 1, wait=wait)
        # Consul: an index that goes backwards (a snapshot restore, a new leader) means start over.
        self.index = index if _as_int(index) >= _as_int(self.index) else 0
        new = [i for i in ids if i not in self.known]
        if self.known and len(ids) >= HISTORY_MAX and new and min(ids) > max(self.known):
            self.put("gap", f"over {HISTORY_MAX} durable messages since the last read: the oldest may be missed")
        self.known = set(ids)
        for message_id in new:
            if not self.put("durable", message_id):
                return

    def refused(self, exc: FoundationError) -> None:
        # Live events still work without the history: say what is lost and carry on.
        self.put("gap", self.refusal(exc))

    @staticmethod
    def refusal(exc: FoundationError) -> str:
        return f"cannot read the durable history ({exc.message}): durable messages missed as events stay missed"


def _as_int(index) -> int:
    try:
        return int(index)
    except (TypeError, ValueError):
        return 0
