"""The Consul HTTP address as one value: parsed once, passed down, rendered back.

Lives at the bottom of the layers so the settings, the Consul gateway and the
renderer share it (nothing here imports anything of Foundation's).
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass


class AddressError(ValueError):
    """An address the consul CLI would not accept either (the caller turns it into a usage error)."""


@dataclass(frozen=True)
class ConsulAddress:
    """``scheme://host:port`` of a Consul agent's HTTP API; ``host`` keeps IPv6 brackets (``[::1]``)."""

    scheme: str = "http"
    host: str = "127.0.0.1"
    port: int = 8500

    @property
    def url(self) -> str:
        """The base URL every request path is appended to."""
        return f"{self.scheme}://{self.host}:{self.port}"

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets (what sockets and ``requests`` want)."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def __str__(self) -> str:
        return self.url

    @classmethod
    def parse(cls, text: str, *, ssl: bool | None = None) -> ConsulAddress:
        """``host``, ``host:port`` or ``scheme://host[:port]`` as the consul CLI accepts them.

        Without a scheme, ``ssl`` (``CONSUL_HTTP_SSL``) picks https; without a
        port, 8500 (http) or 8501 (https).
        """
        raw = text.strip()
        if raw.startswith("unix://"):
            raise AddressError(f"unix socket addresses are not supported: {raw}")
        if "://" not in raw:
            raw = ("https://" if ssl else "http://") + raw
        parts = urllib.parse.urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AddressError(f"invalid Consul address {text!r}")
        try:
            port = parts.port
        except ValueError:
            raise AddressError(f"invalid port in Consul address {text!r}") from None
        if port is None:
            port = 8501 if parts.scheme == "https" else 8500
        host = parts.hostname
        if ":" in host:
            host = f"[{host}]"
        return cls(parts.scheme, host, port)


DEFAULT_CONSUL_ADDRESS = ConsulAddress()
"""The one default: the local agent, ``http://127.0.0.1:8500``."""
