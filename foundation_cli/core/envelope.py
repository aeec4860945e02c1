"""The channel message envelope: what a ``foundation:<channel>`` Consul user event carries.

A Consul user event is gossiped, not stored by the servers, and has a hard
size limit (Consul 1.8: 512 bytes for the event name plus the encoded event,
which includes the payload, the filters and the name again). So the event
carries a compact JSON envelope: message id, time, sender node, content type
and either the data inline or a reference to the KV copy (``r``) with its size
and a digest, which the listener resolves and verifies.

Wire form (keys kept short because every byte is gossiped)::

    {"v":1,"id":"1764290000123-4f9a1c","t":1764290000.123,"n":"node-1","ct":"text/plain","d":"hello"}
    {"v":1,"id":"…","t":…,"n":"node-1","ct":"application/octet-stream","r":"blobs","sz":4096,"h":"…"}

``d`` is UTF-8 text, ``b`` base64 for binary data, ``r`` names the KV area
(``blobs`` or ``history``) holding the full envelope under the same id.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import time
from dataclasses import dataclass, field

from foundation_cli.core import durations, keys

VERSION = 1
# Consul's user-event limit (serf's UserEventSizeLimit, default 512 bytes, "before encoding").
EVENT_LIMIT = 512
# Measured on Consul 1.8.7: the room left for the payload is 512 − 98 − 2·len(event name) − len(filters);
# 112 keeps a margin for other encodings of the same struct.
EVENT_OVERHEAD = 112
# Foundation's own cap on inline envelopes, under the computed room (Consul advises events stay small).
INLINE_LIMIT = 256

CHANNEL_RE = re.compile(r"^(?:_control|_optimizer|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$")
ID_RE = re.compile(r"^\d{13}-[0-9a-f]{6}$")
# The sender is whatever the event says (anyone who can fire an event can claim any name): only its
# shape is checked, a Consul node name, and it is shown as data.
SENDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# type/subtype (RFC 6838 restricted names) with optional ``; name=value`` parameters.
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,63}"
CONTENT_TYPE_RE = re.compile(rf"^{_TOKEN}/{_TOKEN}(?:[ ]?;[ ]?{_TOKEN}=(?:{_TOKEN}|\"[ -~]{{0,64}}\"))*$")
DIGEST_RE = re.compile(r"^[0-9a-f]{16}$")
REF_AREAS = ("blobs", "history")


def validate_channel(channel: str) -> str:
    """A channel name: 1–64 of ``A-Z a-z 0-9 . _ -``, starting alphanumeric (``_control``, ``_optimizer`` reserved)."""
    if not CHANNEL_RE.match(channel or ""):
        from foundation_cli.errors import UsageError

        raise UsageError(
            f"invalid channel name {channel!r}",
            hint="use 1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit",
        )
    return channel


def event_name(channel: str) -> str:
    """The Consul user-event name for ``channel`` (topic namespacing)."""
    return keys.EVENT_PREFIX + channel


def channel_key(channel: str, area: str, message_id: str = "") -> str:
    """KV key of a stored envelope: ``foundation/channels/<ch>/<area>/<id>``."""
    return f"{keys.CHANNELS}{channel}/{area}/{message_id}"


def new_id(now: float | None = None) -> str:
    """A message id that sorts by time: 13-digit Unix milliseconds, a dash, 6 random hex digits."""
    ms = int((time.time() if now is None else now) * 1000)
    return f"{ms:013d}-{secrets.token_hex(3)}"


def id_time(message_id: str) -> float | None:
    """The send time embedded in a message id (``None`` if it is not one of ours)."""
    if not ID_RE.match(message_id):
        return None
    return int(message_id[:13]) / 1000.0


def inline_budget(channel: str, *, node: str | None = None, service: str | None = None, tag: str | None = None) -> int:
    """Bytes of envelope an event for ``channel`` with these filters can carry inline."""
    room = (
        EVENT_LIMIT
        - EVENT_OVERHEAD
        - 2 * len(event_name(channel).encode())
        - sum(len((f or "").encode()) for f in (node, service, tag))
    )
    return min(INLINE_LIMIT, room)


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


@dataclass
class Envelope:
    """One channel message. ``data`` is ``None`` on the wire form of a spilled message."""

    id: str
    time: float
    sender: str
    content_type: str
    data: bytes | None
    ref: str | None = None
    size: int | None = None
    sha: str | None = None
    # Filled in on the receiving side.
    channel: str = ""
    event_id: str | None = None
    via: str = "event"
    extra: dict = field(default_factory=dict)

    def to_wire(self) -> bytes:
        """Compact JSON: data inline (``d`` text / ``b`` base64) or a reference (``r``, ``sz``, ``h``)."""
        out: dict = {"v": VERSION, "id": self.id, "t": round(self.time, 3), "n": self.sender, "ct": self.content_type}
        if self.ref:
            out.update(r=self.ref, sz=self.size, h=self.sha)
        elif self.data is not None:
            try:
                out["d"] = self.data.decode("utf-8")
            except UnicodeDecodeError:
                out["b"] = base64.b64encode(self.data).decode("ascii")
        return json.dumps(out, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    def as_reference(self, area: str) -> Envelope:
        """The wire envelope that points at the full copy stored in KV ``area``."""
        data = self.data or b""
        return Envelope(
            id=self.id,
            time=self.time,
            sender=self.sender,
            content_type=self.content_type,
            data=None,
            ref=area,
            size=len(data),
            sha=digest(data),
            channel=self.channel,
        )

    @classmethod
    def from_wire(cls, raw: bytes | str | None) -> Envelope:
        """Parse a wire envelope; :class:`ValueError` if it is not one (e.g. a raw ``consul event``)."""
        if raw is None:
            raise ValueError("empty payload")
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise ValueError("payload is not a Foundation envelope (not JSON)") from None
        if not isinstance(obj, dict) or obj.get("v") != VERSION or not isinstance(obj.get("id"), str):
            raise ValueError("payload is not a Foundation envelope (no v/id)")
        # Every field is untrusted (anyone who can fire an event writes them): check each one's shape.
        if not ID_RE.match(obj["id"]):
            raise ValueError(f"envelope has an invalid message id {ascii(obj['id'][:40])}")
        sent = obj.get("t", 0.0)
        if isinstance(sent, bool) or not isinstance(sent, (int, float)) or not 0 <= sent < 1e11:
            raise ValueError("envelope has an invalid time")
        sender = obj.get("n") or ""
        if not isinstance(sender, str) or (sender and not SENDER_RE.match(sender)):
            raise ValueError(f"envelope has an invalid sender {ascii(str(sender)[:40])}")
        ctype = obj.get("ct") or "application/octet-stream"
        if not isinstance(ctype, str) or not CONTENT_TYPE_RE.match(ctype):
            raise ValueError(f"envelope has an invalid content type {ascii(str(ctype)[:40])}")
        data: bytes | None = None
        if "d" in obj:
            if not isinstance(obj["d"], str):
                raise ValueError("envelope data 'd' is not text")
            try:
                data = obj["d"].encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate from a \ud800 escape
                raise ValueError("envelope data 'd' is not valid Unicode") from None
        elif "b" in obj:
            try:
                data = base64.b64decode(obj["b"], validate=True)
            except (ValueError, TypeError):
                raise ValueError("envelope has invalid base64 data") from None
        ref = obj.get("r")
        if ref is not None and ref not in REF_AREAS:
            raise ValueError(f"envelope has an unknown reference area {ascii(str(ref)[:40])}")
        if ref is None and data is None:
            raise ValueError("envelope has neither data nor a reference")
        size, sha = obj.get("sz"), obj.get("h")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise ValueError("envelope has an invalid size")
        if sha is not None and (not isinstance(sha, str) or not DIGEST_RE.match(sha)):
            raise ValueError("envelope has an invalid digest")
        return cls(
            id=obj["id"],
            time=float(sent),
            sender=sender,
            content_type=ctype,
            data=data,
            ref=ref,
            size=size,
            sha=sha,
        )

    def verify(self, full: Envelope) -> None:
        """Check a resolved copy matches this reference (id, size, digest)."""
        data = full.data or b""
        if full.id != self.id or (self.size is not None and len(data) != self.size):
            raise ValueError(f"stored copy of message {self.id} does not match its reference")
        if self.sha and digest(data) != self.sha:
            raise ValueError(f"stored copy of message {self.id} fails its digest check")

    def to_dict(self) -> dict:
        """The ``listen --json`` form: JSON data parsed, text as text, binary as base64."""
        from datetime import datetime, timezone

        out: dict = {
            "id": self.id,
            "channel": self.channel,
            "time": datetime.fromtimestamp(self.time, timezone.utc).isoformat(timespec="milliseconds"),
            "sender": self.sender,
            "content_type": self.content_type,
            "size": len(self.data) if self.data is not None else self.size,
            "via": self.via,
            "event_id": self.event_id,
        }
        if self.data is None:
            out.update(data=None, encoding=None)
            return out
        if self.content_type == "application/json":
            try:
                out.update(data=json.loads(self.data), encoding="json")
                return out
            except ValueError:
                pass
        try:
            out.update(data=self.data.decode("utf-8"), encoding="utf-8")
        except UnicodeDecodeError:
            out.update(data=base64.b64encode(self.data).decode("ascii"), encoding="base64")
        return out


@dataclass(frozen=True)
class Since:
    """Where ``listen --since`` starts replaying history: after a message id, or from a time."""

    after_id: str | None = None
    from_time: float | None = None

    def includes(self, message_id: str, sent: float) -> bool:
        if self.after_id is not None:
            return message_id > self.after_id
        return sent >= (self.from_time or 0.0)


def parse_since(text: str, *, now: float | None = None) -> Since:
    """``--since``: a duration (``10m``: messages sent in the last ten minutes), a message id, or ``all``."""
    from foundation_cli.errors import UsageError

    raw = (text or "").strip()
    if raw == "all":
        return Since(from_time=0.0)
    if ID_RE.match(raw):
        return Since(after_id=raw)
    if durations.is_duration(raw):
        return Since(from_time=(time.time() if now is None else now) - durations.parse(raw))
    raise UsageError(
        f"invalid --since {text!r}",
        hint="use a duration (30s, 10m, 2h), a message id (1764290000123-4f9a1c) or 'all'",
    )
