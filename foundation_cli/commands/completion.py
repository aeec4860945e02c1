"""Dynamic shell completion of names from the cluster (services, nodes, channels).

Each function is a Typer ``autocompletion=`` callback, e.g.
``typer.Argument(..., autocompletion=completion.service_names)``. Typer passes
the word being completed (and the click context, from which the Consul
address and token given on the command line are honoured; otherwise the usual
flags → environment → cluster state resolution applies).

A TAB must never hang or print junk into the shell, so every lookup is a
plain read with a short timeout (:data:`TIMEOUT`), stops at the first failure,
and answers ``[]`` when anything at all goes wrong (Consul down, ACL denied,
bad address). py-consul is imported only when a completion actually runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

#: Seconds allowed for each HTTP request a completion makes.
TIMEOUT = 0.5


def _settings(ctx: Any):
    """Settings from the global options on the line being completed (root and command), else the defaults."""
    from foundation_cli.commands.common import GLOBAL_NAMES, make_settings

    values: dict[str, Any] = {}
    chain = []
    while ctx is not None:
        chain.append(ctx)
        ctx = getattr(ctx, "parent", None)
    for level in reversed(chain):  # root first; options nearer the command win
        params = getattr(level, "params", None) or {}
        for name in GLOBAL_NAMES:
            if params.get(name) not in (None, 0, False):
                values[name] = params[name]
    return make_settings(values)


def _lookup(ctx: Any, incomplete: str, fetch: Callable[[Any], Iterable[str]]) -> list[str]:
    """Run ``fetch(client)`` against the cluster; sorted unique names starting with ``incomplete``, or []."""
    try:
        from foundation_cli.raw.recorder import Recorder
        from foundation_cli.tools import consul as consul_tool

        client = consul_tool.connect(_settings(ctx), recorder=Recorder(), timeout=TIMEOUT)
        names = {name for name in fetch(client) if name}
    except Exception:  # noqa: BLE001 - completion must stay silent whatever happens
        return []
    prefix = incomplete or ""
    return sorted(name for name in names if name.startswith(prefix))


def _children(client: Any, prefix: str) -> list[str]:
    """First path segment of every KV key under ``prefix`` (``foundation/services/web/x`` → ``web``)."""
    _, keys = client.kv.get(prefix, keys=True, separator="/")
    return [key[len(prefix) :].strip("/").split("/")[0] for key in keys or [] if key.startswith(prefix)]


def service_names(incomplete: str = "", ctx: Any = None) -> list[str]:
    """Names of Foundation services (specs in KV under ``foundation/services/``) starting with ``incomplete``."""
    from foundation_cli.core import keys

    return _lookup(ctx, incomplete, lambda c: _children(c, keys.SERVICES))


def catalog_service_names(incomplete: str = "", ctx: Any = None) -> list[str]:
    """Every service in the Consul catalog (for ``discover``), starting with ``incomplete``."""
    return _lookup(ctx, incomplete, lambda c: list((c.catalog.services()[1] or {}).keys()))


def node_names(incomplete: str = "", ctx: Any = None) -> list[str]:
    """Consul node names starting with ``incomplete``."""
    return _lookup(ctx, incomplete, lambda c: [n.get("Node", "") for n in c.catalog.nodes()[1] or []])


def _channels(client: Any) -> list[str]:
    from foundation_cli.core import keys

    names = [
        event.get("Name", "")[len(keys.EVENT_PREFIX) :]
        for event in client.event.list()[1] or []
        if event.get("Name", "").startswith(keys.EVENT_PREFIX)
    ]
    names.extend(_children(client, keys.CHANNELS))
    # Internal channels (the config control channel) are not for users to type.
    return [name for name in names if name and not name.startswith("_")]


def _keys_under(client: Any, prefix: str) -> list[str]:
    _, keys = client.kv.get(prefix, keys=True)
    return [key[len(prefix) :] for key in keys or [] if key.startswith(prefix) and not key.endswith("/")]


def config_keys(incomplete: str = "", ctx: Any = None) -> list[str]:
    """Cluster-wide config keys (``foundation/config/<key>``) starting with ``incomplete``."""
    from foundation_cli.core import keys

    return _lookup(ctx, incomplete, lambda c: _keys_under(c, keys.CONFIG))


def kv_keys(incomplete: str = "", ctx: Any = None) -> list[str]:
    """``foundation kv`` keys (relative to ``foundation/kv/``) starting with ``incomplete``."""
    from foundation_cli.core import keys

    return _lookup(ctx, incomplete, lambda c: _keys_under(c, keys.USER_KV))


def channel_names(incomplete: str = "", ctx: Any = None) -> list[str]:
    """Channel names seen in the event list (``foundation:<ch>``) or channel KV, starting with ``incomplete``."""
    return _lookup(ctx, incomplete, _channels)
