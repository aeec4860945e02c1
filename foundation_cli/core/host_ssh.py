"""A host's own SSH settings (``user`` / ``port`` / ``identity_file`` / ``proxy_jump``) and the one merge of them.

A host's settings come in layers, the first that sets a key wins: its ``hosts[]`` entry in
foundation.yaml (:func:`own`), what the state file kept of it (:func:`kept`: ``up`` saves each
host's own settings under ``host_ssh``, by address, so a host gone from foundation.yaml is still
reached the way ``up`` reached it), then defaults (the state file's ``ssh:`` block, for the
day-2 commands). ``down`` (core/orchestrator.py) and ``ssh`` / ``logs`` / ``exec``
(facades/remote.py) merge with :func:`merge`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept out of the import: `foundation ssh` / `logs` load this module and need neither
    from foundation_cli.core.cluster_config import HostConfig
    from foundation_cli.tools import ssh

KEYS = ("user", "port", "identity_file", "proxy_jump")


@dataclass(frozen=True)
class HostSSH:
    """One host's merged settings; ``identity_file`` with ``~`` expanded."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    proxy_jump: str | None = None  # [user@]bastion[:port] (ssh -J)


def own(h: HostConfig) -> dict[str, Any]:
    """The settings a ``hosts[]`` entry sets itself (what ``up`` keeps under ``host_ssh``)."""
    return {k: getattr(h, k) for k in KEYS if getattr(h, k)}


def kept(state: Mapping[str, Any], address: str) -> dict[str, Any]:
    """What the state file kept of ``address``'s own settings."""
    return dict((state.get("host_ssh") or {}).get(address) or {})


def merge(*layers: Mapping[str, Any] | None) -> HostSSH:
    """Each of :data:`KEYS` from the first layer that sets it (an empty value sets nothing)."""
    found = {k: next((layer[k] for layer in layers if layer and layer.get(k)), None) for k in KEYS}
    identity = found["identity_file"]
    return HostSSH(
        user=found["user"],
        port=found["port"],
        identity_file=os.path.expanduser(str(identity)) if identity else None,
        proxy_jump=found["proxy_jump"],
    )


def connect(address: str, opts: ssh.SSHOptions, settings: HostSSH) -> ssh.Connection:
    """An SSH connection to ``address``: its own ``settings`` win over ~/.ssh/config, which wins over ``opts``."""
    from foundation_cli.tools import ssh

    if settings.proxy_jump and opts.host_proxy_jump.get(address) != settings.proxy_jump:
        opts = dataclasses.replace(opts, host_proxy_jump={**opts.host_proxy_jump, address: settings.proxy_jump})
    return ssh.connect(address, opts, user=settings.user, port=settings.port, identity=settings.identity_file)
