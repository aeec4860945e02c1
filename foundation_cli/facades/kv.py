"""Plain Consul KV under the cluster's prefix (``foundation kv``).

User keys live under ``<prefix>/kv/`` so they never collide with Foundation's
own records (service specs, locks, config, channels) beside them.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass

from foundation_cli.core import keys
from foundation_cli.errors import ConflictError, NotFoundError, UsageError

MAX_KEY_LENGTH = 512
_BAD_KEY_CHARS = re.compile(r"[\x00-\x1f\x7f\s]")


def unprintable(key: str) -> str | None:
    """The first character Consul refuses in a key (``U+00AD SOFT HYPHEN``), or None.

    Consul 1.8 answers 400 to a key with a character Go's ``unicode.IsPrint`` rejects:
    letters, marks, numbers, punctuation and symbols pass; format (Cf), private-use,
    surrogate and unassigned code points do not. Characters assigned after Consul's
    Go release (Unicode 12) still reach Consul, which says 400 (see the gateway).
    """
    import unicodedata

    for ch in key:
        if ch != " " and unicodedata.category(ch)[0] not in "LMNPS":
            name = unicodedata.name(ch, "")
            return f"U+{ord(ch):04X}{f' ({name})' if name else ''}"
    return None


def validate_key(key: str, *, allow_empty: bool = False) -> str:
    """Check a user key; one-line :class:`UsageError` naming the problem."""
    if not key:
        if allow_empty:
            return key
        raise UsageError("key must not be empty")
    try:  # argv bytes that are not UTF-8 arrive as lone surrogates (surrogateescape); Consul keys are UTF-8
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError:
        raise UsageError(
            f"invalid key {ascii(key)}: not valid UTF-8", hint="Consul keys are UTF-8 text; check the shell's locale"
        ) from None
    if key.startswith("/"):
        raise UsageError(
            f"invalid key {key!r}: must not start with '/'", hint="keys are relative to the cluster prefix"
        )
    if "//" in key:
        raise UsageError(f"invalid key {key!r}: empty path segment ('//')")
    if any(seg in (".", "..") for seg in key.split("/")):
        raise UsageError(f"invalid key {key!r}: '.' and '..' segments are not allowed")
    if _BAD_KEY_CHARS.search(key):
        raise UsageError(f"invalid key {key!r}: whitespace and control characters are not allowed")
    odd = None if key.isascii() else unprintable(key)  # ASCII controls were refused just above
    if odd is not None:
        raise UsageError(
            f"invalid key {ascii(key)}: {odd} is not a printable character",
            hint="Consul refuses keys with format, private-use or unassigned characters (Go's unicode.IsPrint)",
        )
    if size > MAX_KEY_LENGTH:
        raise UsageError(f"invalid key: longer than {MAX_KEY_LENGTH} bytes")
    return key


@dataclass
class Entry:
    """One KV entry, with the key relative to the user prefix."""

    key: str
    value: bytes | None
    modify_index: int
    flags: int = 0
    session: str | None = None

    def to_dict(self) -> dict:
        text: str | None
        try:
            text = None if self.value is None else self.value.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            text = base64.b64encode(self.value or b"").decode("ascii")
            encoding = "base64"
        return {
            "key": self.key,
            "value": text,
            "encoding": encoding,
            "modify_index": self.modify_index,
            "flags": self.flags,
            "session": self.session,
        }


class KVStore:
    """KV operations on a connected, recording Consul client."""

    def __init__(self, client, prefix: str = keys.USER_KV) -> None:
        self.client = client
        self.prefix = prefix

    def _entry(self, raw: dict) -> Entry:
        return Entry(
            key=raw["Key"][len(self.prefix) :],
            value=raw.get("Value"),
            modify_index=int(raw.get("ModifyIndex", 0)),
            flags=int(raw.get("Flags", 0)),
            session=raw.get("Session"),
        )

    def get(self, key: str) -> Entry:

        validate_key(key)
        _index, data = self.client.kv.get(self.prefix + key)
        if data is None:
            raise NotFoundError(f"key {key!r} not found", hint="`foundation kv list` shows the keys that exist")
        return self._entry(data)

    def put(self, key: str, value: bytes, *, cas: int | None = None, flags: int | None = None) -> bool:
        """Store ``value``; with ``cas`` only if the key's ModifyIndex still equals it (0: only if absent)."""

        validate_key(key)
        ok = self.client.kv.put(self.prefix + key, value, cas=cas, flags=flags)
        if not ok:
            raise ConflictError(
                f"check-and-set failed for {key!r}: it changed since index {cas}",
                hint="re-read it with `foundation kv get` and try again",
            )
        return True

    def delete(self, key: str, *, recurse: bool = False, cas: int | None = None) -> bool:

        validate_key(key, allow_empty=recurse)
        if not key and not recurse:
            raise UsageError("key must not be empty")
        ok = self.client.kv.delete(self.prefix + key, recurse=recurse or None, cas=cas)
        if not ok:
            raise ConflictError(f"check-and-set delete failed for {key!r}: it changed since index {cas}")
        return True

    def list(self, prefix: str = "") -> list[Entry]:

        validate_key(prefix.rstrip("/"), allow_empty=True)
        _index, data = self.client.kv.get(self.prefix + prefix, recurse=True)
        return [self._entry(item) for item in (data or [])]
