"""Global options, resolved once per command run.

The Consul connection is read exactly as the ``consul`` CLI reads it
(``CONSUL_HTTP_ADDR``, ``CONSUL_HTTP_TOKEN``, ``CONSUL_HTTP_TOKEN_FILE``,
``CONSUL_HTTP_SSL``, ``CONSUL_CACERT``, ``CONSUL_CLIENT_CERT``,
``CONSUL_CLIENT_KEY``, ``CONSUL_HTTP_SSL_VERIFY``), with flags winning and the
cluster state written by ``foundation up`` filling in what neither gives.
"""

from __future__ import annotations

import os
import urllib.parse
from dataclasses import dataclass, field

from foundation_cli.errors import UsageError
from foundation_cli.raw import secrets

DEFAULT_CONSUL_ADDR = "http://127.0.0.1:8500"
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

    @property
    def quiet(self) -> bool:
        return self.verbosity < 0


def _truthy(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() in ("1", "true", "yes", "on")


def normalize_addr(addr: str, *, ssl: bool | None = None) -> str:
    """``host:port`` / ``scheme://host:port`` → a full base URL, as the consul CLI accepts them."""
    raw = addr.strip()
    if raw.startswith("unix://"):
        raise UsageError(f"unix socket addresses are not supported: {raw}", hint="use http://host:port")
    if "://" not in raw:
        raw = ("https://" if ssl else "http://") + raw
    parts = urllib.parse.urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"invalid Consul address {addr!r}", hint="expected host:port or http(s)://host:port")
    try:
        port = parts.port
    except ValueError:
        raise UsageError(f"invalid port in Consul address {addr!r}") from None
    if port is None:
        port = 8501 if parts.scheme == "https" else 8500
    host = parts.hostname
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}:{port}"


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
    if not addr or not token:
        state_addr, state_token = _from_cluster_state()
        addr = addr or state_addr
        token = token or state_token
    secrets.register(token)
    verify = _truthy(env.get("CONSUL_HTTP_SSL_VERIFY"))
    color = not no_color and "NO_COLOR" not in env
    return Settings(
        consul_addr=normalize_addr(addr or DEFAULT_CONSUL_ADDR, ssl=ssl),
        token=token,
        cacert=env.get("CONSUL_CACERT") or None,
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
    )


def _from_cluster_state() -> tuple[str | None, str | None]:
    """Address and token from the state file ``foundation up`` wrote, if any."""
    from foundation_cli.core import cluster_state

    state = cluster_state.load()
    if not state:
        return None, None
    return state.get("consul_http_addr"), state.get("token")
