"""A small unicast DNS client (stdlib only) for the ``dns`` discovery strategy: A, AAAA and SRV.

Why not dnspython: three record types over UDP (TCP on truncation) are about
a hundred lines, and the stdlib resolver (``getaddrinfo``) cannot ask for SRV.
Every query is recorded as a ``dns`` raw operation with the equivalent ``dig``
line, against the nameserver actually asked.
"""

from __future__ import annotations

import ipaddress
import secrets
import shlex
import socket
import struct
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


def encode_name(name: str) -> bytes:
    out = bytearray()
    for label in name.rstrip(".").split("."):
        raw = label.encode("idna") if label else b""
        if not raw or len(raw) > 63:
            raise UsageError(f"invalid DNS name {name!r}")
        out.append(len(raw))
        out += raw
    return bytes(out) + b"\x00"


def build_query(name: str, rtype: str, qid: int) -> bytes:
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)  # RD
    return header + encode_name(name) + struct.pack("!HH", TYPES[rtype], 1)


def _read_name(data: bytes, offset: int) -> tuple[str, int]:
    """A possibly compressed name at ``offset``; returns (name, offset after it)."""
    labels: list[str] = []
    end = None
    jumps = 0
    while True:
        if offset >= len(data):
            raise ValueError("name runs past the message")
        length = data[offset]
        if length & 0xC0 == 0xC0:
            if offset + 1 >= len(data):
                raise ValueError("truncated pointer")
            if end is None:
                end = offset + 2
            offset = ((length & 0x3F) << 8) | data[offset + 1]
            jumps += 1
            if jumps > 32:
                raise ValueError("compression loop")
            continue
        if length == 0:
            offset += 1
            break
        labels.append(data[offset + 1 : offset + 1 + length].decode("ascii", "replace"))
        offset += 1 + length
    return ".".join(labels) + ".", (end if end is not None else offset)


def parse_response(data: bytes, qid: int) -> tuple[Response, bool]:
    """Parse a reply to query ``qid``; returns (response, truncated)."""
    if len(data) < 12:
        raise ValueError("short DNS message")
    rid, flags, qd, an, _ns, ar = struct.unpack("!HHHHHH", data[:12])
    if rid != qid:
        raise ValueError("reply id does not match the query")
    offset = 12
    for _ in range(qd):
        _name, offset = _read_name(data, offset)
        offset += 4
    sections: list[list[Record]] = [[], [], []]
    for index, count in enumerate((an, _ns, ar)):
        for _ in range(count):
            name, offset = _read_name(data, offset)
            rtype, _cls, ttl, rdlen = struct.unpack("!HHIH", data[offset : offset + 10])
            offset += 10
            rdata_at = offset
            offset += rdlen
            kind = _TYPE_NAMES.get(rtype)
            if kind == "A" and rdlen == 4:
                sections[index].append(Record(name, kind, ttl, socket.inet_ntop(socket.AF_INET, data[rdata_at:offset])))
            elif kind == "AAAA" and rdlen == 16:
                sections[index].append(
                    Record(name, kind, ttl, socket.inet_ntop(socket.AF_INET6, data[rdata_at:offset]))
                )
            elif kind == "SRV" and rdlen >= 7:
                prio, weight, port = struct.unpack("!HHH", data[rdata_at : rdata_at + 6])
                target, _ = _read_name(data, rdata_at + 6)
                sections[index].append(Record(name, kind, ttl, target, prio, weight, port))
            elif kind == "CNAME":
                target, _ = _read_name(data, rdata_at)
                sections[index].append(Record(name, kind, ttl, target))
    return Response(rcode=flags & 0x000F, answers=sections[0], additional=sections[2]), bool(flags & 0x0200)


def dig_command(name: str, rtype: str, nameserver: tuple[str, int]) -> str:
    host, port = nameserver
    p = f" -p {port}" if port != 53 else ""
    return f"dig @{host}{p} +short {rtype} {shlex.quote(name)}"


def query(name: str, rtype: str, *, nameserver: tuple[str, int], timeout: float = 2.0) -> Response:
    """Ask ``nameserver`` for ``name``/``rtype`` (UDP, TCP when truncated); recorded as a ``dns`` operation."""
    op = RawOperation(
        kind="dns", method="QUERY", command=dig_command(name, rtype, nameserver), host=nameserver[0], port=nameserver[1]
    )
    qid = secrets.randbelow(65536)
    packet = build_query(name, rtype, qid)
    family = socket.AF_INET6 if ":" in nameserver[0] else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            sock.connect(nameserver)
            sock.send(packet)
            while True:
                data = sock.recv(65535)
                try:
                    response, truncated = parse_response(data, qid)
                    break
                except ValueError as exc:
                    if "id does not match" in str(exc):
                        continue
                    raise
        if truncated:
            response = _query_tcp(packet, qid, nameserver, timeout)
    except (OSError, ValueError) as exc:
        reason = "timed out" if isinstance(exc, socket.timeout) else str(exc)
        op.finish(error=reason)
        current_recorder().add(op)
        raise UnreachableError(
            f"DNS query {rtype} {name} to {nameserver[0]}:{nameserver[1]} failed: {reason}",
            hint="check the nameserver address (cluster.options.nameserver) and that it answers",
        ) from None
    rcode = RCODES.get(response.rcode, str(response.rcode)) if response.rcode else "NOERROR"
    op.finish(status=response.rcode, summary=f"{rcode}, {len(response.answers)} answer(s)")
    current_recorder().add(op)
    if response.rcode not in (0, 3):
        raise UnreachableError(f"DNS query {rtype} {name} failed: {rcode}")
    return response


def _query_tcp(packet: bytes, qid: int, nameserver: tuple[str, int], timeout: float) -> Response:
    with socket.create_connection(nameserver, timeout=timeout) as sock:
        sock.sendall(struct.pack("!H", len(packet)) + packet)
        head = _recv_exact(sock, 2)
        data = _recv_exact(sock, struct.unpack("!H", head)[0])
    return parse_response(data, qid)[0]


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise OSError("connection closed")
        buf += chunk
    return buf
