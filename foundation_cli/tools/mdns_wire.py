"""What the mDNS adapter puts on and takes off the wire: the service type, TXT encoding, one answer.

Interpreting answers (validation, host records, cluster status) is core's job
(:mod:`foundation_cli.core.mdns_records`, which re-exports these names).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SERVICE_TYPE = "_foundation._tcp.local."


def build_txt(fields: dict[str, str]) -> bytes:
    """TXT rdata in wire format: each ``key=value`` prefixed by its length (max 255 bytes each)."""
    out = bytearray()
    for key, value in fields.items():
        entry = f"{key}={value}".encode()
        if len(entry) > 255:
            raise ValueError(f"TXT entry {key!r} is longer than 255 bytes")
        out.append(len(entry))
        out += entry
    return bytes(out)


@dataclass
class Answer:
    """One resolved mDNS service instance, as the adapter saw it (untrusted)."""

    service_type: str
    instance: str
    addresses: list[str] = field(default_factory=list)
    port: int | None = None
    text: bytes | None = None
    server: str | None = None
