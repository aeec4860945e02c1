"""Unicast DNS for the ``dns`` discovery strategy: A, AAAA and SRV, with dnspython.

dnspython builds, sends and parses the messages (UDP, TCP when the answer is
truncated); it is imported only when a query runs, so the node agent, which
never asks, needs none. Every query is recorded as a ``dns`` raw operation
with the equivalent ``dig`` line, against the nameserver actually asked.
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
from dataclasses import dataclass

from foundation_cli.errors import UnreachableError, UsageError
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import current_recorder

TYPES = {"A": 1, "AAAA": 28, "SRV": 33, "CNAME": 5}
_TYPE_NAMES = {v: k for k, v in TYPES.items()}
RCODES = {1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass
class Record:
    """One answer or additional record."""

    name: str
    rtype: str
    ttl: int
    value: str  # the address for A/AAAA, the target for SRV/CNAME
    priority: int = 0
    weight: int = 0
    port: int = 0


@dataclass
class Response:
    rcode: int
    answers: list[Record]
    additional: list[Record]


def parse_nameserver(text: str) -> tuple[str, int]:
    """``1.2.3.4``, ``1.2.3.4:5353``, ``[::1]:53`` or ``::1`` → (host, port)."""
    raw = text.strip()
    host, port = raw, 53
    if raw.startswith("["):
        host, _, rest = raw[1:].partition("]")
        if rest.startswith(":"):
            port = _port(rest[1:], text)
    elif raw.count(":") == 1:
        host, _, p = raw.partition(":")
        port = _port(p, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise UsageError(f"invalid nameserver {text!r}", hint="an IP address, optionally :port") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise UsageError(f"invalid port in nameserver {whole!r}")
    return int(text)


def system_nameserver(path: str = "/etc/resolv.conf") -> tuple[str, int]:
    """The first ``nameserver`` of resolv.conf (what the system resolver asks)."""
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 2 and parts[0] == "nameserver":
                    return parse_nameserver(parts[1])
    except OSError:
        pass
    raise UsageError("no nameserver configured", hint="set cluster.options.nameserver in foundation.yaml")


def build_query(name: str, rtype: str, qid: int) -> bytes:
    """The wire form of a recursive query for ``name``/``rtype`` with id ``qid``."""
    return _make_query(name, rtype, qid).to_wire()


def _make_query(name: str, rtype: str, qid: int | None = None):
    import dns.exception
    import dns.message
    import dns.name

    try:
        query = dns.message.make_query(dns.name.from_text(name), rtype)
    except (dns.exception.DNSException, UnicodeError, ValueError):
        raise UsageError(f"invalid DNS name {name!r}") from None
    if qid is not None:
        query.id = qid
    return query


def _records(rrsets) -> list[Record]:
    out: list[Record] = []
    for rrset in rrsets:
        rtype = _TYPE_NAMES.get(int(rrset.rdtype))
        for rd in rrset:
            name = rrset.name.to_text()
            if rtype in ("A", "AAAA"):
                out.append(Record(name, rtype, rrset.ttl, rd.address))
            elif rtype == "SRV":
                out.append(Record(name, rtype, rrset.ttl, rd.target.to_text(), rd.priority, rd.weight, rd.port))
            elif rtype == "CNAME":
                out.append(Record(name, rtype, rrset.ttl, rd.target.to_text()))
    return out


def _response(message) -> Response:
    return Response(
        rcode=int(message.rcode()), answers=_records(message.answer), additional=_records(message.additional)
    )


def parse_response(data: bytes, qid: int) -> tuple[Response, bool]:
    """Parse a reply to query ``qid``; returns (response, truncated). Anything malformed: ``ValueError``."""
    import dns.exception
    import dns.flags
    import dns.message

    try:
        message = dns.message.from_wire(data, ignore_trailing=True, raise_on_truncation=False)
    except (dns.exception.DNSException, UnicodeError, ValueError, IndexError) as exc:
        raise ValueError(f"malformed DNS message: {exc}") from None
    if message.id != qid:
        raise ValueError("reply id does not match the query")
    return _response(message), bool(message.flags & dns.flags.TC)


def dig_command(name: str, rtype: str, nameserver: tuple[str, int]) -> str:
    host, port = nameserver
    p = f" -p {port}" if port != 53 else ""
    return f"dig @{host}{p} +short {rtype} {shlex.quote(name)}"


def query(name: str, rtype: str, *, nameserver: tuple[str, int], timeout: float = 2.0) -> Response:
    """Ask ``nameserver`` for ``name``/``rtype`` (UDP, TCP when truncated); recorded as a ``dns`` operation."""
    import dns.exception
    import dns.query

    op = RawOperation(
        kind="dns", method="QUERY", command=dig_command(name, rtype, nameserver), host=nameserver[0], port=nameserver[1]
    )
    message = _make_query(name, rtype)
    recorder = current_recorder()
    recorder.begin(op)
    host, port = nameserver
    try:
        reply, _used_tcp = dns.query.udp_with_fallback(
            message, host, timeout=timeout, port=port, ignore_unexpected=True, ignore_errors=True
        )
        response = _response(reply)
    except (OSError, dns.exception.DNSException, ValueError) as exc:
        reason = "timed out" if isinstance(exc, (socket.timeout, dns.exception.Timeout)) else str(exc)
        op.finish(error=reason)
        recorder.add(op)
        raise UnreachableError(
            f"DNS query {rtype} {name} to {nameserver[0]}:{nameserver[1]} failed: {reason}",
            hint="check the nameserver address (cluster.options.nameserver) and that it answers",
        ) from None
    rcode = RCODES.get(response.rcode, str(response.rcode)) if response.rcode else "NOERROR"
    op.finish(status=response.rcode, summary=f"{rcode}, {len(response.answers)} answer(s)")
    recorder.add(op)
    if response.rcode not in (0, 3):
        raise UnreachableError(f"DNS query {rtype} {name} failed: {rcode}")
    return response
