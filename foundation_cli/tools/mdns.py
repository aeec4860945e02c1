"""mDNS adapter (python-zeroconf): announce, withdraw and browse, bound to explicit interfaces only.

Foundation never multicasts on every interface unasked: each call names the
interfaces (names like ``br0`` or local addresses; ``all`` is an explicit
opt-in). Every query, announcement and goodbye is recorded as an ``mdns`` raw
operation carrying the equivalent ``avahi-browse`` / ``avahi-publish-service``
and ``dns-sd`` command; in a dry run announcements are recorded, not sent.
zeroconf is imported inside the functions (it costs ~70 ms at start-up).
"""

from __future__ import annotations

import ipaddress
import os
import queue
import shlex
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from foundation_cli.errors import UnreachableError, UsageError
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import current_recorder
from foundation_cli.tools.mdns_wire import SERVICE_TYPE, Answer, build_txt

ENV_INTERFACE = "FOUNDATION_MDNS_INTERFACE"
NO_INTERFACE_HINT = (
    f"pass --interface IF (a name like eth0 or one of its addresses), or set {ENV_INTERFACE}; "
    "Foundation never multicasts on every interface unless you say --interface all"
)


@dataclass
class Binding:
    """Where zeroconf listens and sends: addresses (or ``all``) and the IP version(s)."""

    addresses: list[str]
    ip_version: str = "4"  # "4", "6" or "both"
    all_interfaces: bool = False

    @property
    def label(self) -> str:
        return "all" if self.all_interfaces else ",".join(self.addresses)


def interfaces_from_env() -> list[str]:
    """Interfaces named by ``FOUNDATION_MDNS_INTERFACE`` (comma-separated), or none."""
    raw = os.environ.get(ENV_INTERFACE, "")
    return [part.strip() for part in raw.split(",") if part.strip()]


def _local_adapters() -> list[tuple[str, list[str]]]:
    """(name, addresses) for every local interface; IPv6 as ``addr%scope`` when scoped."""
    import ifaddr  # a zeroconf dependency

    out = []
    for adapter in ifaddr.get_adapters():
        addrs = []
        for ip in adapter.ips:
            if isinstance(ip.ip, tuple):
                addr, _flow, scope = ip.ip
                addrs.append(f"{addr}%{scope}" if scope else addr)
            else:
                addrs.append(ip.ip)
        out.append((adapter.nice_name, addrs))
    return out


def resolve_binding(specs: Iterable[str], *, ipv4: bool = False, ipv6: bool = False) -> Binding:
    """Interface names or addresses → the local addresses zeroconf binds (one-line error when unusable).

    Neither ``ipv4`` nor ``ipv6`` means IPv4 only; both means dual stack.
    """
    specs = [s for s in specs if s]
    version = "both" if ipv4 and ipv6 else ("6" if ipv6 else "4")
    if not specs:
        raise UsageError("mDNS needs an explicit interface", hint=NO_INTERFACE_HINT)
    if any(s.lower() == "all" for s in specs):
        return Binding(addresses=[], ip_version=version, all_interfaces=True)
    adapters = _local_adapters()
    chosen: list[str] = []
    for spec in specs:
        try:
            ip = ipaddress.ip_address(spec.split("%", 1)[0])
        except ValueError:
            ip = None
        if ip is not None:
            if not any(a.split("%", 1)[0] == str(ip) for _n, addrs in adapters for a in addrs):
                raise UsageError(f"no local interface has the address {spec}", hint="see `ip -br addr`")
            if (ip.version == 4 and version == "6") or (ip.version == 6 and version == "4"):
                raise UsageError(
                    f"{spec} is an IPv{ip.version} address but IPv{version} was asked",
                    hint="add --ipv6 for IPv6 addresses (with --ipv4 too for both)",
                )
            chosen.append(spec)
            continue
        match = [addrs for name, addrs in adapters if name == spec]
        if not match:
            names = ", ".join(name for name, _a in adapters)
            raise UsageError(f"no such network interface: {spec}", hint=f"interfaces here: {names}")
        wanted = []
        for addr in match[0]:
            v = ipaddress.ip_address(addr.split("%", 1)[0]).version
            if version == "both" or str(v) == version:
                wanted.append(addr)
        if not wanted:
            raise UsageError(f"interface {spec} has no IPv{'4/6' if version == 'both' else version} address")
        chosen.extend(wanted)
    return Binding(addresses=chosen, ip_version=version)


def _zeroconf(binding: Binding):
    """A started zeroconf instance on exactly the binding's interfaces."""
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    ipv = {"4": IPVersion.V4Only, "6": IPVersion.V6Only, "both": IPVersion.All}[binding.ip_version]
    if binding.all_interfaces:
        interfaces = InterfaceChoice.All
    else:
        # zeroconf maps an IPv6 address (as a plain string) to its interface index itself.
        interfaces = [addr.split("%", 1)[0] for addr in binding.addresses]
    try:
        return Zeroconf(interfaces=interfaces, ip_version=ipv)
    except OSError as exc:
        raise UnreachableError(
            f"cannot open mDNS sockets on {binding.label}: {exc.strerror or exc}",
            hint="check the interface is up and multicast-capable (ip link show)",
        ) from None


# -- the commands an operator would type ------------------------------------------------------


def browse_command(service_type: str) -> str:
    short = service_type.removesuffix(".local.")
    return f"avahi-browse -rpt {short}  # or: dns-sd -B {short} local."


def publish_command(instance: str, service_type: str, port: int, fields: dict[str, str]) -> str:
    short = service_type.removesuffix(".local.")
    txt = " ".join(shlex.quote(f"{k}={v}") for k, v in fields.items())
    return (
        f"avahi-publish-service {shlex.quote(instance)} {short} {port} {txt}"
        f"  # or: dns-sd -R {shlex.quote(instance)} {short} local. {port} {txt}"
    )


def goodbye_command(instance: str, service_type: str) -> str:
    short = service_type.removesuffix(".local.")
    return (
        f"# stop `avahi-publish-service {shlex.quote(instance)} {short} …` (SIGTERM): "
        "it multicasts the goodbye (TTL 0) records"
    )


def _record(op: RawOperation, *, status: int | None = None, summary: str = "", error: str | None = None) -> None:
    op.finish(status=status, summary=summary, error=error)
    current_recorder().add(op)


# -- announce -------------------------------------------------------------------------------


class Advertiser:
    """Announce one ``_foundation._tcp`` instance; :meth:`close` withdraws it with goodbye packets."""

    def __init__(self, binding: Binding, *, instance: str, fields: dict[str, str], port: int) -> None:
        self.binding = binding
        self.instance = instance
        self.fields = fields
        self.port = port
        self._zc = None
        self._info = None
        self.dry_run = current_recorder().dry_run

    @property
    def full_name(self) -> str:
        return f"{self.instance}.{SERVICE_TYPE}"

    def start(self) -> None:
        """Probe and announce (recorded; in a dry run recorded only)."""
        op = RawOperation(
            kind="mdns",
            method="ANNOUNCE",
            command=publish_command(self.instance, SERVICE_TYPE, self.port, self.fields),
            interface=self.binding.label,
            dry_run=self.dry_run,
        )
        if self.dry_run:
            _record(op, summary="not announced (dry run)")
            return
        from zeroconf import NonUniqueNameException, ServiceInfo

        addresses = self.binding.addresses or _all_addresses(self.binding.ip_version)
        host = "".join(ch if ch.isalnum() or ch == "-" else "-" for ch in self.instance)[:63]
        self._info = ServiceInfo(
            SERVICE_TYPE,
            self.full_name,
            port=self.port,
            properties=build_txt(self.fields),
            server=f"{host}.local.",
            parsed_addresses=[a.split("%", 1)[0] for a in addresses],
        )
        self._zc = _zeroconf(self.binding)
        try:
            self._zc.register_service(self._info, allow_name_change=True)
        except NonUniqueNameException as exc:
            self.close(send_goodbye=False)
            _record(op, error="name in use")
            raise UsageError(f"mDNS name {self.instance!r} is already in use on the LAN") from exc
        except Exception as exc:
            self.close(send_goodbye=False)
            _record(op, error=type(exc).__name__)
            raise UnreachableError(f"mDNS announcement failed on {self.binding.label}: {exc}") from None
        self.instance = self._info.name.removesuffix("." + SERVICE_TYPE)
        _record(op, summary=f"announced {self.instance} on {self.binding.label}")

    def close(self, *, send_goodbye: bool = True) -> None:
        """Withdraw the announcement (goodbye packets) and close the sockets; safe to call twice."""
        zc, info = self._zc, self._info
        self._zc = self._info = None
        if zc is None:
            return
        if not send_goodbye or info is None:
            if info is not None:
                _forget(zc, info)
            zc.close()
            return
        op = RawOperation(
            kind="mdns",
            method="GOODBYE",
            command=goodbye_command(self.instance, SERVICE_TYPE),
            interface=self.binding.label,
        )
        try:
            # Zeroconf.close() multicasts the goodbye (TTL 0) records three times before it closes the sockets.
            zc.close()
            _record(op, summary=f"withdrew {self.instance}")
        except Exception as exc:  # the sockets may already be gone at interpreter exit
            _record(op, error=type(exc).__name__)


def _forget(zc, info) -> None:
    """Drop ``info`` from zeroconf's registry without goodbyes (``--once``: caches keep it for its TTL)."""
    import asyncio

    async def remove() -> None:
        zc.registry.async_remove(info)

    try:
        asyncio.run_coroutine_threadsafe(remove(), zc.loop).result(1.0)
    except Exception:
        pass


def _all_addresses(version: str) -> list[str]:
    """Every non-loopback address (only with the explicit ``--interface all``)."""
    out = []
    for _name, addrs in _local_adapters():
        for addr in addrs:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
            if ip.is_loopback or ip.is_link_local:
                continue
            if version == "both" or str(ip.version) == version:
                out.append(addr)
    return out


# -- browse ---------------------------------------------------------------------------------


class Browser:
    """Keep browsing service types; resolved answers arrive on :meth:`next` (for agents and one-shot browses)."""

    def __init__(self, binding: Binding, types: Iterable[str] = (SERVICE_TYPE,)) -> None:
        self.binding = binding
        self.types = list(types)
        self._zc = None
        self._browser = None
        self._events: queue.Queue[tuple[str, str, bool]] = queue.Queue()

    def start(self, *, record: bool = True) -> None:
        """Open the sockets and start querying (recorded unless the caller records a summary itself)."""
        from zeroconf import ServiceBrowser, ServiceStateChange

        for t in self.types if record else ():
            op = RawOperation(kind="mdns", method="QUERY", command=browse_command(t), interface=self.binding.label)
            _record(op, summary="browsing")
        self._zc = _zeroconf(self.binding)

        def handler(zeroconf, service_type: str, name: str, state_change) -> None:
            gone = state_change is ServiceStateChange.Removed
            self._events.put((service_type, name, gone))

        self._browser = ServiceBrowser(self._zc, self.types, handlers=[handler])

    def next(self, timeout: float) -> tuple[Answer | None, bool] | None:
        """The next change within ``timeout`` s: ``(answer, removed)``; ``None`` on timeout.

        The answer is resolved from zeroconf's cache (or one short query); an
        instance that does not resolve comes back with no addresses.
        """
        try:
            service_type, name, gone = self._events.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None
        if gone:
            return Answer(service_type=service_type, instance=name), True
        return self._resolve(service_type, name, timeout=max(min(timeout, 1.0), 0.2)), False

    def _resolve(self, service_type: str, name: str, *, timeout: float) -> Answer:
        from zeroconf import ServiceInfo

        answer = Answer(service_type=service_type, instance=name)
        try:
            info = ServiceInfo(service_type, name)
            if not info.load_from_cache(self._zc):
                info.request(self._zc, int(timeout * 1000))
            answer.addresses = list(info.parsed_scoped_addresses())
            answer.port = info.port
            answer.text = info.text
            answer.server = info.server
        except Exception:  # a hostile name or record must not stop the browse
            pass
        return answer

    def close(self) -> None:
        browser, zc = self._browser, self._zc
        self._browser = self._zc = None
        try:
            if browser is not None:
                browser.cancel()
        finally:
            if zc is not None:
                zc.close()


def browse(
    binding: Binding,
    *,
    types: Iterable[str] = (SERVICE_TYPE,),
    timeout: float = 2.0,
    expect: int | None = None,
    settle: float | None = None,
    on_answer: Callable[[Answer], None] | None = None,
) -> list[Answer]:
    """Browse for ``timeout`` seconds; one answer per instance.

    Stops early when ``expect`` Foundation instances resolved, or, with ``settle``, once something
    answered and no new instance did for ``settle`` seconds (responders answer a query within
    about 120 ms, RFC 6762 §6: the answer is then complete, barring a lost packet).
    """
    started = time.monotonic()
    last_new = started
    browser = Browser(binding, types)
    found: dict[str, Answer] = {}
    op_error = None
    try:
        browser.start(record=False)
        deadline = started + timeout
        while True:
            now = time.monotonic()
            remaining = deadline - now
            if settle is not None and found:
                remaining = min(remaining, last_new + settle - now)
            if remaining <= 0:
                break
            item = browser.next(remaining)
            if item is None:
                break
            answer, removed = item
            if answer is None:
                continue
            if removed:
                found.pop(answer.instance, None)
                continue
            if answer.instance not in found or answer.addresses:
                if answer.instance not in found:
                    last_new = time.monotonic()
                found[answer.instance] = answer
                if on_answer is not None:
                    on_answer(answer)
            if expect is not None:
                ours = [a for a in found.values() if a.service_type == SERVICE_TYPE and a.addresses]
                if len(ours) >= expect:
                    break
    except Exception as exc:
        op_error = type(exc).__name__
        raise
    finally:
        browser.close()
        elapsed = time.monotonic() - started
        op = RawOperation(
            kind="mdns",
            method="QUERY",
            command=" ; ".join(browse_command(t) for t in browser.types),
            interface=binding.label,
        )
        op.started = time.time() - elapsed
        _record(op, summary=f"{len(found)} instance(s) answered in {elapsed:.2f} s", error=op_error)
    return list(found.values())
