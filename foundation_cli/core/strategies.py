"""Cluster-formation strategies: where ``up`` gets its hosts. Each returns the same :class:`HostRecord` list.

- ``static``: the ``hosts:`` list of foundation.yaml.
- ``mdns``: browse ``_foundation._tcp`` on an explicitly named interface
  (``cluster.options.interface`` or ``$FOUNDATION_MDNS_INTERFACE``; with
  neither, discovery is skipped — Foundation never multicasts on every
  interface unasked).
- ``dns``: A/AAAA or SRV records of ``cluster.options.name`` (SRV when the
  name starts with ``_``), asked of ``cluster.options.nameserver`` or the
  system's resolver.
- ``consul``: the servers of an existing Consul cluster reached at
  ``cluster.options.consul`` (``/v1/status/peers`` + ``/v1/catalog/nodes``);
  those records carry ``extra['join_only']``: join them, do not bootstrap them.

``config`` is a :class:`foundation_cli.core.cluster_config.ClusterConfig` (or
``None`` for mortal defaults). :func:`claimable` is the filter ``up`` applies
before touching anything; :func:`hosts_table` is the table ``up`` and
``discover-hosts`` print.
"""

from __future__ import annotations

import socket
from typing import Any

from foundation_cli.core import mdns_records
from foundation_cli.core.hosts import HostRecord
from foundation_cli.errors import ConfigError, UsageError
from foundation_cli.raw.address import ConsulAddress

DEFAULT_MDNS_TIMEOUT = 2.0


def _options(config) -> dict[str, Any]:
    cluster = getattr(config, "cluster", None)
    options = getattr(cluster, "options", None)
    return dict(options) if isinstance(options, dict) else {}


def strategy_of(config) -> str:
    """The strategy ``config`` selects (mdns with no config/hosts, static otherwise)."""
    if config is None:
        return "mdns"
    strategy = getattr(config, "strategy", None)
    if isinstance(strategy, str) and strategy:
        return strategy
    return "static" if getattr(config, "hosts", None) else "mdns"


def find_hosts(config, settings, **kwargs: Any) -> list[HostRecord]:
    """The hosts ``up`` may act on: :func:`discover` filtered by :func:`claimable`, plus ``join_only`` servers.

    Safe by default: machines of other clusters and invalid announcements never
    come out of this function. To *show* everything that answered, call
    :func:`discover` and render it with :func:`hosts_table`.
    """
    return [h for h in discover(config, settings, **kwargs) if claimable([h]) or h.extra.get("join_only")]


def discover(
    config,
    settings,
    *,
    interfaces: list[str] | None = None,
    ipv4: bool = False,
    ipv6: bool = False,
    timeout: float | None = None,
    notes: list[str] | None = None,
) -> list[HostRecord]:
    """Everything the configured strategy finds, classified (``extra['status']`` on mDNS records).

    ``notes`` collects human-readable remarks (e.g. why mDNS was skipped).
    """
    notes = notes if notes is not None else []
    strategy = strategy_of(config)
    opts = _options(config)
    if strategy == "static":
        return static_hosts(config)
    if strategy == "mdns":
        from foundation_cli.tools import mdns as mdns_tool

        chosen = list(interfaces or [])
        if not chosen and opts.get("interface"):
            value = opts["interface"]
            chosen = [str(v) for v in value] if isinstance(value, list) else [str(value)]
        if not chosen:
            chosen = mdns_tool.interfaces_from_env()
        if not chosen:
            notes.append(f"mDNS discovery skipped: no interface given ({mdns_tool.NO_INTERFACE_HINT})")
            return []
        binding = mdns_tool.resolve_binding(
            chosen, ipv4=ipv4 or bool(opts.get("ipv4")), ipv6=ipv6 or bool(opts.get("ipv6"))
        )
        wait = timeout if timeout is not None else float(opts.get("timeout", DEFAULT_MDNS_TIMEOUT))
        return mdns_hosts(binding, timeout=wait, settings=settings)
    if strategy == "dns":
        name = opts.get("name")
        if not name:
            raise ConfigError(
                "cluster.strategy dns needs cluster.options.name",
                hint="e.g. options: {name: _foundation._tcp.lab.example, nameserver: 10.0.0.1}",
            )
        return dns_hosts(str(name), nameserver=opts.get("nameserver"), record_type=opts.get("type"))
    if strategy == "consul":
        addr = opts.get("consul") or opts.get("address")
        if not addr:
            raise ConfigError(
                "cluster.strategy consul needs cluster.options.consul (one address of the existing cluster)",
                hint="e.g. options: {consul: 10.0.0.5} (HTTPS on 8501 when TLS is on; http://10.0.0.5:8500 for an "
                "open cluster)",
            )
        return consul_hosts(str(addr), settings, tls=tls_on(config))
    raise ConfigError(f"unknown cluster.strategy {strategy!r}", hint="static, mdns, dns or consul")


# -- static -----------------------------------------------------------------------------------


def static_hosts(config) -> list[HostRecord]:
    """``hosts:`` as records (user/port fall back to ``ssh:`` at connect time, not here)."""
    out = []
    for h in getattr(config, "hosts", None) or []:
        if isinstance(h, HostRecord):
            out.append(h)
            continue
        out.append(
            HostRecord(
                address=h.address,
                name=getattr(h, "node_name", None),
                port=getattr(h, "port", None) or 22,
                user=getattr(h, "user", None),
                role=getattr(h, "role", None),
                source="static",
            )
        )
    return out


# -- mdns -------------------------------------------------------------------------------------


def our_cluster(settings=None) -> tuple[str | None, str | None]:
    """(cluster id, datacenter) of the cluster this machine operates, from the state file ``up`` wrote."""
    from foundation_cli.core import cluster_state

    state = cluster_state.load() or {}
    cid = state.get("cluster_id")
    dc = state.get("datacenter")
    return (cid if isinstance(cid, str) else None), (dc if isinstance(dc, str) else None)


def cluster_members(settings, *, timeout: float = 2.0) -> set[str] | None:
    """Addresses of the nodes Consul knows (``/v1/catalog/nodes``); ``None`` when it cannot be asked."""
    if settings is None:
        return None
    try:
        from foundation_cli.tools import consul as consul_tool

        client = consul_tool.connect(settings, timeout=timeout)
        _idx, nodes = client.catalog.nodes()
    except Exception:  # unreachable/denied: claims stay unverified
        return None
    return {n.get("Address") for n in nodes or [] if n.get("Address")}


def classify_all(records: list[HostRecord], *, cluster_id: str | None, members: set[str] | None) -> list[HostRecord]:
    """Set every record's status (see :func:`foundation_cli.core.mdns_records.classify`); sorted for display."""
    for rec in records:
        mdns_records.classify(rec, cluster_id=cluster_id, members=members)
    order = {
        mdns_records.THIS_CLUSTER: 0,
        mdns_records.UNCLAIMED: 1,
        mdns_records.OTHER_CLUSTER: 2,
        mdns_records.CANDIDATE: 3,
        mdns_records.INVALID: 4,
    }
    return sorted(records, key=lambda r: (order.get(r.extra.get("status", ""), 5), _addr_key(r.address), r.name or ""))


def _addr_key(addr: str) -> tuple:
    import ipaddress

    try:
        ip = ipaddress.ip_address(addr)
        return (ip.version, int(ip))
    except ValueError:
        return (9, 0)


def mdns_hosts(
    binding,
    *,
    timeout: float = DEFAULT_MDNS_TIMEOUT,
    ssh: bool = False,
    settings=None,
    expect: int | None = None,
    cluster_id: str | None = None,
    settle: float | None = None,
) -> list[HostRecord]:
    """Browse ``_foundation._tcp`` (and with ``ssh`` the plain SSH/workstation types) and classify the answers.

    ``expect`` / ``settle``: stop early (see :func:`foundation_cli.tools.mdns.browse`)."""
    from foundation_cli.tools import mdns as mdns_tool

    types = [mdns_records.SERVICE_TYPE] + (list(mdns_records.SSH_SERVICE_TYPES) if ssh else [])
    answers = mdns_tool.browse(binding, types=types, timeout=timeout, expect=expect, settle=settle)
    records = [mdns_records.record_from_answer(a) for a in answers]
    if cluster_id is None:
        cluster_id, _dc = our_cluster(settings)
    claims = cluster_id and any(r.cluster_id == cluster_id for r in records)
    members = cluster_members(settings) if claims else None
    records = _dedupe(records)
    return classify_all(records, cluster_id=cluster_id, members=members)


def _dedupe(records: list[HostRecord]) -> list[HostRecord]:
    """One row per address: a Foundation record wins over a plain SSH one for the same machine."""
    seen: dict[str, HostRecord] = {}
    out = []
    for rec in records:
        if not rec.address:
            out.append(rec)
            continue
        prev = seen.get(rec.address)
        if prev is None:
            seen[rec.address] = rec
            out.append(rec)
        elif prev.source == "mdns-ssh" and rec.source == "mdns":
            out[out.index(prev)] = rec
            seen[rec.address] = rec
        elif prev.source == rec.source == "mdns":
            # Two Foundation instances on one address: keep both, they are different claims.
            out.append(rec)
    return out


# -- dns --------------------------------------------------------------------------------------


def dns_hosts(name: str, *, nameserver: str | None = None, record_type: str | None = None) -> list[HostRecord]:
    """Hosts from DNS: SRV (target + port = SSH port) when ``name`` starts with ``_``, else A/AAAA."""
    from foundation_cli.tools import dns

    rtype = (record_type or ("SRV" if name.startswith("_") else "A")).upper()
    if rtype not in ("SRV", "A", "AAAA"):
        raise ConfigError(f"cluster.options.type must be SRV, A or AAAA, got {record_type!r}")
    ns = dns.parse_nameserver(nameserver) if nameserver else None
    if rtype != "SRV" and ns is None:
        return _getaddrinfo_hosts(name, rtype)
    ns = ns or dns.system_nameserver()
    if rtype in ("A", "AAAA"):
        out = []
        for t in ("A", "AAAA") if record_type is None else (rtype,):
            resp = dns.query(name, t, nameserver=ns)
            out += [
                HostRecord(address=r.value, name=name.rstrip("."), source="dns") for r in resp.answers if r.rtype == t
            ]
        return out
    resp = dns.query(name, "SRV", nameserver=ns)
    srvs = sorted((r for r in resp.answers if r.rtype == "SRV"), key=lambda r: (r.priority, -r.weight, r.value))
    extra = {}
    for r in resp.additional:
        if r.rtype in ("A", "AAAA"):
            extra.setdefault(r.name.lower(), []).append(r.value)
    out = []
    for srv in srvs:
        addrs = extra.get(srv.value.lower())
        if not addrs:
            addrs = []
            for t in ("A", "AAAA"):
                addrs += [r.value for r in dns.query(srv.value, t, nameserver=ns).answers if r.rtype == t]
        for addr in addrs[:1]:
            out.append(HostRecord(address=addr, name=srv.value.rstrip(".").split(".")[0], port=srv.port, source="dns"))
    return out


def _getaddrinfo_hosts(name: str, rtype: str) -> list[HostRecord]:
    family = socket.AF_INET if rtype == "A" else socket.AF_INET6
    try:
        infos = socket.getaddrinfo(name, None, family, socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise UsageError(f"cannot resolve {name}: {exc.strerror}") from None
    addrs = list(dict.fromkeys(info[4][0] for info in infos))
    return [HostRecord(address=a, name=name.rstrip("."), source="dns") for a in addrs]


# -- consul -----------------------------------------------------------------------------------


def tls_on(config) -> bool:
    """TLS on in ``config`` (the default): LAN addresses are reached over HTTPS, as ``up`` configures them."""
    tls = getattr(config, "tls", None)
    return bool(getattr(tls, "enabled", False))


def consul_address(addr: str, *, tls: bool) -> ConsulAddress:
    """``cluster.options.consul`` as an address: its own scheme when it names one, else HTTPS (port
    8501) when TLS is on and plain HTTP (8500) when it is off — the same rule as every LAN address."""
    from foundation_cli.settings import parse_address

    return parse_address(addr, ssl=True if tls else None)


def consul_hosts(addr: str, settings, *, tls: bool = False) -> list[HostRecord]:
    """The servers of the Consul cluster at ``addr`` (``/v1/status/peers``), named from the catalog."""
    import dataclasses

    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    base = settings if settings is not None else Settings()
    target = dataclasses.replace(base, consul_addr=consul_address(addr, tls=tls).url)
    client = consul_tool.connect(target, timeout=5.0)
    peers = client.status.peers()
    _idx, nodes = client.catalog.nodes()
    by_addr = {n.get("Address"): n for n in nodes or []}
    out = []
    for peer in peers or []:
        host = peer.rsplit(":", 1)[0].strip("[]")
        node = by_addr.get(host, {})
        out.append(
            HostRecord(
                address=host,
                name=node.get("Node"),
                source="consul",
                role="server",
                datacenter=node.get("Datacenter"),
                extra={"join_only": "true", "status": "existing-server"},
            )
        )
    return out


# -- what up may touch, and how it is shown ---------------------------------------------------


def claimable(hosts: list[HostRecord]) -> list[HostRecord]:
    """The hosts ``up`` may bootstrap: configured ones, and mDNS machines that are unclaimed and valid.

    Machines in another cluster, invalid announcements, plain SSH candidates,
    machines already in this cluster and existing Consul servers
    (``join_only``) are never bootstrapped.
    """
    out = []
    for h in hosts:
        status = h.extra.get("status")
        if h.extra.get("join_only"):
            continue
        if status is None or status == mdns_records.UNCLAIMED:
            out.append(h)
    return out


def hosts_table(hosts: list[HostRecord]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """``(columns, rows)`` for ``Output.table``: what was found, display-safe."""
    columns = ("ADDRESS", "NODE", "ROLE", "CLUSTER", "DC", "VERSION", "SSH", "STATUS")
    rows = []
    for h in hosts:
        status = h.extra.get("status") or h.source
        shown = mdns_records.STATUS_TEXT.get(status, status)
        if h.extra.get("problems"):
            shown += f" ({h.extra['problems']})"
        rows.append(
            (
                h.address or "-",
                mdns_records.safe_text(h.name or "-", 40),
                mdns_records.safe_text(h.role or "-", 10),
                mdns_records.safe_text(_short_id(h.cluster_id), 40),
                mdns_records.safe_text(h.datacenter or "-", 20),
                mdns_records.safe_text(h.version or "-", 20),
                str(h.port),
                mdns_records.safe_text(shown, 120),
            )
        )
    return columns, rows


def _short_id(cid: str | None) -> str:
    if not cid:
        return "-"
    return cid[:8] if len(cid) == 36 and cid.count("-") == 4 else cid


def read_discovered(client) -> list[dict[str, Any]]:
    """What node agents heard on mDNS (``foundation/discovered/<addr>``), for ``status``; bad entries skipped."""
    import json

    from foundation_cli.core import keys

    _idx, entries = client.kv.get(keys.DISCOVERED, recurse=True)
    out = []
    for entry in entries or []:
        try:
            data = json.loads(entry.get("Value") or b"")
        except ValueError:
            continue
        if isinstance(data, dict):
            data["address"] = entry["Key"][len(keys.DISCOVERED) :]
            out.append(data)
    return out


def to_dict(h: HostRecord) -> dict[str, Any]:
    """JSON form of a record (``--json``)."""
    return {
        "address": h.address,
        "node": h.name,
        "ssh_port": h.port,
        "user": h.user,
        "source": h.source,
        "role": h.role,
        "cluster_id": h.cluster_id,
        "datacenter": h.datacenter,
        "version": h.version,
        "status": h.extra.get("status"),
        "problems": h.extra.get("problems"),
        "extra": {k: v for k, v in h.extra.items() if k not in ("status", "problems")},
    }
