"""What a Foundation machine puts in its ``_foundation._tcp`` TXT record, and how a browser judges it.

Pure logic (no network): the advertiser builds the TXT wire bytes with
:func:`build_txt`; the browser parses whatever arrived with :func:`parse_txt`
and :func:`validate`, then :func:`classify` decides what the machine is to us.
Anything on the LAN can answer mDNS, so every field is checked before it is
shown or acted on: a malformed, oversized or inconsistent record becomes an
``invalid`` host with the problems listed, never an exception.

TXT keys (RFC 6763 ``key=value`` strings, keys case-insensitive)::

    txtvers=1  node=<name>  role=server|client|none  dc=<datacenter>
    cluster=<cluster id, empty when unclaimed>  version=<foundation version>  ssh=<port>
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from foundation_cli.core.hosts import HostRecord
from foundation_cli.tools.mdns_wire import SERVICE_TYPE, Answer, build_txt  # noqa: F401 - wire names, re-exported

SSH_SERVICE_TYPES = ("_ssh._tcp.local.", "_workstation._tcp.local.")
TXT_VERSION = "1"

# RFC 6763 §6.2: a TXT record should fit one packet; we refuse anything past this.
MAX_TXT_BYTES = 1300
MAX_VALUE_CHARS = 128

ROLES = ("server", "client", "none")
REQUIRED = ("node", "role", "version", "ssh")

# Host statuses, as shown in `discover-hosts` and carried in HostRecord.extra["status"].
THIS_CLUSTER = "this-cluster"
OTHER_CLUSTER = "other-cluster"
UNCLAIMED = "unclaimed"
INVALID = "invalid"
CANDIDATE = "ssh-candidate"
STATUS_TEXT = {
    THIS_CLUSTER: "in this cluster",
    OTHER_CLUSTER: "other cluster",
    UNCLAIMED: "unclaimed",
    INVALID: "invalid",
    CANDIDATE: "ssh candidate",
}

_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_DC = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_CLUSTER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_VERSION = re.compile(r"^[0-9A-Za-z.+_-]{1,32}$")
_KEY = re.compile(r"^[\x21-\x3c\x3e-\x7e]{1,32}$")  # printable ASCII except '=' (RFC 6763 §6.4)


@dataclass
class Advertisement:
    """The fields one machine announces about itself."""

    node: str
    role: str = "none"
    datacenter: str = ""
    cluster_id: str = ""
    version: str = ""
    ssh_port: int = 22

    def fields(self) -> dict[str, str]:
        return {
            "txtvers": TXT_VERSION,
            "node": self.node,
            "role": self.role,
            "dc": self.datacenter,
            "cluster": self.cluster_id,
            "version": self.version,
            "ssh": str(self.ssh_port),
        }


def check_advertisement(ad: Advertisement) -> list[str]:
    """Problems that would make our own announcement invalid to other browsers (empty when fine)."""
    _fields, problems = validate(ad.fields())
    return problems


def parse_txt(data: bytes | None) -> tuple[dict[str, str], list[str]]:
    """Decode TXT rdata into ``{key: value}`` plus the problems met (never raises).

    Keys are lower-cased; a repeated key keeps its first value (RFC 6763 §6.4);
    an entry that is not UTF-8 or has an unusable key is skipped and reported.
    """
    problems: list[str] = []
    fields: dict[str, str] = {}
    if not data:
        return fields, ["no TXT record"]
    if len(data) > MAX_TXT_BYTES:
        problems.append(f"TXT record too large ({len(data)} bytes > {MAX_TXT_BYTES})")
    i = 0
    n = 0
    while i < len(data):
        length = data[i]
        chunk = data[i + 1 : i + 1 + length]
        i += 1 + length
        n += 1
        if len(chunk) < length:
            problems.append("TXT record truncated")
            break
        if not chunk:
            continue
        try:
            text = chunk.decode("utf-8")
        except UnicodeDecodeError:
            problems.append(f"TXT entry {n} is not valid UTF-8")
            continue
        key, sep, value = text.partition("=")
        if not _KEY.match(key):
            problems.append(f"TXT entry {n} has an invalid key")
            continue
        key = key.lower()
        if key in fields:
            continue
        fields[key] = value if sep else ""
    return fields, problems


def validate(fields: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Check the parsed fields against the schema; returns (the known fields, problems)."""
    problems: list[str] = []
    known: dict[str, str] = {}
    for key in ("txtvers", "node", "role", "dc", "cluster", "version", "ssh"):
        if key in fields:
            known[key] = fields[key]
    for key in REQUIRED:
        if not known.get(key):
            problems.append(f"missing {key}")
    for key, value in known.items():
        if len(value) > MAX_VALUE_CHARS:
            problems.append(f"{key} is too long ({len(value)} chars)")
            known[key] = ""
    if known.get("txtvers") and known["txtvers"] != TXT_VERSION:
        problems.append(f"unsupported txtvers {safe_text(known['txtvers'])}")
    checks = (("node", _NODE), ("dc", _DC), ("cluster", _CLUSTER), ("version", _VERSION))
    for key, pattern in checks:
        value = known.get(key)
        if value and not pattern.match(value):
            problems.append(f"{key} has invalid characters")
    role = known.get("role")
    if role and role not in ROLES:
        problems.append(f"role must be one of {', '.join(ROLES)}")
    ssh = known.get("ssh")
    if ssh and (not ssh.isdigit() or not 1 <= int(ssh) <= 65535):
        problems.append("ssh is not a port number")
    if role in ("server", "client") and not known.get("cluster"):
        problems.append(f"role {role} without a cluster id")
    return known, problems


def safe_text(value: object, limit: int = 40) -> str:
    """A display-safe form of an untrusted string: no control chars, no markup brackets, bounded."""
    text = str(value)
    cleaned = "".join(ch if ch.isprintable() and ch not in "[]\\" else "?" for ch in text)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 1] + "…"


def record_from_answer(answer: Answer) -> HostRecord:
    """Turn one answer into a HostRecord; problems go to ``extra['problems']`` (status set by :func:`classify`)."""
    address = _first_address(answer.addresses)
    instance = safe_text(answer.instance.removesuffix("." + answer.service_type), 64)
    if answer.service_type in SSH_SERVICE_TYPES:
        port = answer.port if answer.service_type == "_ssh._tcp.local." and answer.port else 22
        name = (answer.server or "").removesuffix(".local.").removesuffix(".")
        rec = HostRecord(
            address=address or "",
            name=safe_text(name or instance, 64),
            port=port,
            source="mdns-ssh",
            extra={"status": CANDIDATE, "instance": instance, "service": answer.service_type.removesuffix(".local.")},
        )
        if not address:
            rec.extra.update(status=INVALID, problems="no address")
        return rec
    fields, problems = parse_txt(answer.text)
    known, more = validate(fields)
    problems += more
    if not address:
        problems.append("no usable address")
    ssh = known.get("ssh", "")
    rec = HostRecord(
        address=address or "",
        name=known.get("node") or None,
        port=int(ssh) if ssh.isdigit() and 1 <= int(ssh) <= 65535 else 22,
        source="mdns",
        role=known.get("role") or None,
        cluster_id=known.get("cluster") or None,
        datacenter=known.get("dc") or None,
        version=known.get("version") or None,
        extra={"instance": instance},
    )
    if problems:
        # Never carry unchecked strings out of an invalid record.
        rec.name = safe_text(rec.name, 40) if rec.name else None
        rec.cluster_id = safe_text(rec.cluster_id, 40) if rec.cluster_id else None
        rec.datacenter = safe_text(rec.datacenter, 40) if rec.datacenter else None
        rec.version = safe_text(rec.version, 20) if rec.version else None
        rec.role = safe_text(rec.role, 10) if rec.role else None
        rec.extra["problems"] = "; ".join(dict.fromkeys(problems))
        rec.extra["status"] = INVALID
    return rec


def _first_address(addresses: list[str]) -> str | None:
    """The first usable unicast address (IPv4 preferred); garbage and multicast are ignored."""
    good: list[tuple[int, str]] = []
    for text in addresses:
        try:
            ip = ipaddress.ip_address(text.split("%", 1)[0])
        except ValueError:
            continue
        if ip.is_multicast or ip.is_unspecified:
            continue
        scope = text.split("%", 1)[1] if "%" in text else ""
        # A link-local IPv6 address is only usable with its scope (interface), e.g. fe80::1%3.
        keep_scope = ip.version == 6 and ip.is_link_local and scope.isalnum()
        good.append((ip.version, f"{ip}%{scope}" if keep_scope else str(ip)))
    good.sort(key=lambda item: item[0])
    return good[0][1] if good else None


def classify(rec: HostRecord, *, cluster_id: str | None, members: set[str] | None = None) -> str:
    """Set and return ``rec.extra['status']``: this / other cluster, unclaimed, invalid or ssh candidate.

    ``members`` (addresses Consul knows, when it could be asked) checks a claim
    of *our* cluster id: TXT records are unauthenticated, so a machine claiming
    our id that is not a member is marked invalid (spoofed or stale).
    """
    status = rec.extra.get("status")
    if status in (INVALID, CANDIDATE):
        return status
    if not rec.cluster_id:
        status = UNCLAIMED
    elif cluster_id and rec.cluster_id == cluster_id:
        if members is not None and rec.address not in members:
            status = INVALID
            rec.extra["problems"] = "claims this cluster's id but is not a member (spoofed or stale)"
        else:
            status = THIS_CLUSTER
    else:
        status = OTHER_CLUSTER
    rec.extra["status"] = status
    return status


def status_of(rec: HostRecord) -> str:
    """The status of a record; records from static/dns/consul strategies count as candidates to use."""
    return rec.extra.get("status") or "configured"
