"""Global options, resolved once per command run.

The Consul connection is read exactly as the ``consul`` CLI reads it
(``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, ``CONSUL_HTTP_TOKEN_FILE``,
``CONSUL_HTTP_SSL``, ``CONSUL_CACERT``, ``CONSUL_CLIENT_CERT``,
``CONSUL_CLIENT_KEY``, ``CONSUL_HTTP_SSL_VERIFY``), with flags winning and the
cluster state written by ``foundation up`` filling in what neither gives.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from foundation_cli.errors import UsageError
from foundation_cli.raw import secrets
from foundation_cli.raw.address import DEFAULT_CONSUL_ADDRESS, AddressError, ConsulAddress

DEFAULT_CONSUL_ADDR = DEFAULT_CONSUL_ADDRESS.url
DEFAULT_KV_PREFIX = "foundation"


@dataclass
class Settings:
    """Everything a command needs to know about how it was asked to run."""

    consul_addr: str | None = None
    token: str | None = None
    cacert: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    ssl_verify: bool = True
    config_path: str | None = None
    explain: bool = False
    dry_run: bool = False
    json: bool = False
    color: bool = True
    verbosity: int = 0  # -1 quiet, 0 normal, 1+ verbose
    argv: list[str] = field(default_factory=list)
    # Other servers of the cluster `foundation up` made, tried in order when ``consul_addr`` is unreachable.
    fallback_addresses: tuple[ConsulAddress, ...] = ()

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0

    @property
    def address(self) -> ConsulAddress:
        """``consul_addr`` as one value (parsed once per value; the default when unset)."""
        cached = self.__dict__.get("_address")
        if cached is None or cached[0] != self.consul_addr:
            cached = (self.consul_addr, parse_address(self.consul_addr) if self.consul_addr else DEFAULT_CONSUL_ADDRESS)
            self.__dict__["_address"] = cached
        return cached[1]


def _truthy(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def parse_address(addr: str, *, ssl: bool | None = None) -> ConsulAddress:
    """``host:port`` / ``scheme://host:port`` → a :class:`ConsulAddress`, as the consul CLI accepts them."""
    try:
        return ConsulAddress.parse(addr, ssl=ssl)
    except AddressError as exc:
        hint = "use http://host:port" if "unix" in str(exc) else "expected host:port or http(s)://host:port"
        raise UsageError(str(exc), hint=hint) from None


def normalize_addr(addr: str, *, ssl: bool | None = None) -> str:
    """``host:port`` / ``scheme://host:port`` → a full base URL, as the consul CLI accepts them."""
    return parse_address(addr, ssl=ssl).url


def resolve(
    *,
    consul_addr: str | None = None,
    token: str | None = None,
    config_path: str | None = None,
    explain: bool = False,
    dry_run: bool = False,
    json_output: bool = False,
    no_color: bool = False,
    quiet: bool = False,
    verbose: int = 0,
    argv: list[str] | None = None,
    env: dict[str, str] | None = None,
) -> Settings:
    """Build :class:`Settings` from flags and the environment (flags win)."""
    env = dict(os.environ if env is None else env)
    ssl = _truthy(env.get("CONSUL_HTTP_SSL"))
    addr = consul_addr or env.get("CONSUL_HTTP_ADDR")
    if not token:
        token = env.get("CONSUL_HTTP_TOKEN") or None
        token_file = env.get("CONSUL_HTTP_TOKEN_FILE")
        if not token and token_file:
            try:
                with open(token_file, encoding="utf-8") as fh:
                    token = fh.read().strip() or None
            except OSError as exc:
                raise UsageError(f"cannot read CONSUL_HTTP_TOKEN_FILE {token_file}: {exc.strerror}") from None
    state_addr, state_token, state_addrs = _from_cluster_state()
    addr = addr or state_addr
    address = parse_address(addr or DEFAULT_CONSUL_ADDR, ssl=ssl)
    # The state's management token and CA go only to that cluster's own servers, never to an
    # address given for something else (--consul-addr / CONSUL_HTTP_ADDR elsewhere: pass --token).
    ours = _same_cluster(address, [state_addr or "", *state_addrs])
    token = token or (state_token if ours else None)
    secrets.register(token)
    verify = _truthy(env.get("CONSUL_HTTP_SSL_VERIFY"))
    color = not no_color and "NO_COLOR" not in env
    return Settings(
        consul_addr=address.url,
        token=token,
        cacert=env.get("CONSUL_CACERT") or (_state_cacert() if ours else None),
        client_cert=env.get("CONSUL_CLIENT_CERT") or None,
        client_key=env.get("CONSUL_CLIENT_KEY") or None,
        ssl_verify=True if verify is None else verify,
        config_path=config_path,
        explain=explain,
        dry_run=dry_run,
        json=json_output,
        color=color,
        verbosity=-1 if quiet else verbose,
        argv=list(argv or []),
        fallback_addresses=_fallbacks(address, state_addrs),
    )


def _fallbacks(address: ConsulAddress, state_addrs: list[str]) -> tuple[ConsulAddress, ...]:
    """The state file's other servers, in order — only when ``address`` is one of them (same cluster)."""
    known = []
    for text in state_addrs:
        try:
            known.append(ConsulAddress.parse(text))
        except AddressError:
            continue
    if address not in known:
        return ()
    return tuple(a for a in known if a != address)


def _from_cluster_state() -> tuple[str | None, str | None, list[str]]:
    """Address, token and every server's address from the state file ``foundation up`` wrote, if any."""
    from foundation_cli import cluster_state

    state = cluster_state.load()
    if not state:
        return None, None, []
    addrs = state.get("consul_http_addrs")
    addrs = [a for a in addrs if isinstance(a, str)] if isinstance(addrs, list) else []
    return state.get("consul_http_addr"), state.get("token"), addrs


def _state_cacert() -> str | None:
    """The CA certificate ``foundation up`` made for this cluster (TLS on by default), if any."""
    from foundation_cli import cluster_state

    state = cluster_state.load() or {}
    cacert = state.get("cacert")
    return cacert if isinstance(cacert, str) and os.path.isfile(cacert) else None


def _same_cluster(address: ConsulAddress, known: list[str]) -> bool:
    """Whether ``address`` is one of the addresses the state file knows for its cluster."""
    for text in known:
        try:
            if text and ConsulAddress.parse(text) == address:
                return True
        except AddressError:
            continue
    return False
