"""The one model for a raw operation, whatever tool performed it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Literal

Kind = Literal["consul-http", "ssh-exec", "ssh-upload", "mdns", "dns", "local-process"]


@dataclass
class RawOperation:
    """One operation as it was (or, in a dry run, would have been) sent.

    ``kind`` selects which request fields are meaningful:

    - ``consul-http``: ``method``, ``url`` (full, with query), ``body``, ``token_used``
    - ``ssh-exec``: ``host``, ``user``, ``port``, ``proxy_jump``, ``command``, ``stdin_desc``
    - ``ssh-upload``: ``host``, ``user``, ``port``, ``proxy_jump``, ``path``, ``content``, ``mode``
    - ``mdns``: ``method`` (QUERY, ANNOUNCE, GOODBYE), ``command`` (the avahi/dns-sd equivalent), ``interface``
    - ``dns``: ``command`` (the equivalent ``dig`` line), ``host``/``port`` (the nameserver)
    - ``local-process``: ``argv``
    """

    kind: Kind
    method: str | None = None
    url: str | None = None
    body: bytes | None = None
    token_used: bool = False
    cacert: str | None = None  # consul-http over HTTPS: the CA file the client verified with (not a secret)
    host: str | None = None
    user: str | None = None
    port: int | None = None
    proxy_jump: str | None = None  # ssh through this bastion (``ssh -J``)
    command: str | None = None
    stdin_desc: str | None = None
    path: str | None = None
    content: bytes | None = None
    mode: int | None = None
    interface: str | None = None
    argv: list[str] | None = None
    read_only: bool = False  # an ssh-exec/local-process probe that changes nothing (runs even in a dry run)
    # What happened.
    dry_run: bool = False
    status: int | None = None
    summary: str = ""
    error: str | None = None
    started: float = field(default_factory=time.time)
    duration_ms: float | None = None

    @property
    def is_write(self) -> bool:
        """Whether this operation changes state (what ``--dry-run`` withholds)."""
        if self.kind == "consul-http":
            return (self.method or "GET").upper() != "GET"
        if self.kind == "mdns":
            return (self.method or "QUERY").upper() in ("ANNOUNCE", "GOODBYE")
        return self.kind in ("ssh-exec", "ssh-upload", "local-process") and not self.read_only

    @property
    def is_long_poll(self) -> bool:
        """A Consul blocking query (``?index=N``): it may wait minutes, so ``--explain`` shows it when it returns."""
        if self.kind != "consul-http" or (self.method or "GET").upper() != "GET" or not self.url:
            return False
        import urllib.parse

        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.url).query)
        return any(v not in ("", "0") for v in query.get("index", []))

    def finish(self, *, status: int | None = None, summary: str = "", error: str | None = None) -> None:
        """Stamp the outcome and the elapsed time."""
        self.status = status
        self.summary = summary
        self.error = error
        self.duration_ms = (time.time() - self.started) * 1000.0

    def to_dict(self) -> dict:
        """JSON-ready form (bodies as text where they decode, secrets masked by the caller)."""
        out: dict = {"kind": self.kind, "dry_run": self.dry_run}
        for name in ("method", "url", "host", "user", "port", "command", "path", "mode", "interface", "argv"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        for name in ("body", "content"):
            value = getattr(self, name)
            if value is not None:
                out[name] = value.decode("utf-8", "replace")
        out.update(
            status=self.status,
            summary=self.summary,
            error=self.error,
            duration_ms=None if self.duration_ms is None else round(self.duration_ms, 2),
        )
        return out
