"""Reaching a node over SSH with the settings `foundation up` saved (global `ssh:` + per-host overrides).

The state file keeps the global ``ssh:`` block and, under ``host_ssh``, each
host's own ``user`` / ``port`` / ``identity_file`` / ``proxy_jump`` from foundation.yaml, by
address; ``nodes`` maps addresses to Consul node names. ``ssh``, ``logs``,
``exec`` and ``snapshot save --from-scheduled`` all connect through here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from foundation_cli.core import host_ssh as host_ssh_settings
from foundation_cli.errors import NotFoundError


@dataclass
class HostSSH:
    address: str
    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    proxy_jump: str | None = None  # through this bastion (ssh -J)
    sudo_password_env: str | None = None  # where the sudo password comes from (names, never the password)
    sudo_password_file: str | None = None

    def argv(self) -> list[str]:
        """The system ``ssh`` command line for this host (``foundation ssh``)."""
        argv = ["ssh"]
        if self.identity_file:
            argv += ["-i", self.identity_file]
        if self.known_hosts:
            argv += ["-o", f"UserKnownHostsFile={self.known_hosts}"]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.proxy_jump:
            argv += ["-J", self.proxy_jump]
        argv.append(f"{self.user}@{self.address}" if self.user else self.address)
        return argv


def _expand(path: Any) -> str | None:
    return os.path.expanduser(str(path)) if path else None


def host_ssh(address: str, state: dict | None = None) -> HostSSH:
    """The SSH settings for ``address``: its own from foundation.yaml, else the global ``ssh:`` ones."""
    if state is None:
        from foundation_cli import cluster_state

        state = cluster_state.load() or {}
    glob = state.get("ssh") or {}
    own = host_ssh_settings.merge(host_ssh_settings.kept(state, address), glob)
    return HostSSH(
        address=address,
        user=own.user,
        port=own.port,
        identity_file=own.identity_file,
        known_hosts=_expand(glob.get("known_hosts")),
        proxy_jump=own.proxy_jump,
        sudo_password_env=glob.get("sudo_password_env"),
        sudo_password_file=_expand(glob.get("sudo_password_file")),
    )


def node_address(node: str, state: dict | None = None) -> str | None:
    """A node's address from the state file (``nodes``: address → node name), or the address itself."""
    if state is None:
        from foundation_cli import cluster_state

        state = cluster_state.load() or {}
    nodes = state.get("nodes") or {}
    if node in nodes or node in (state.get("hosts") or []):
        return node
    return next((addr for addr, name in nodes.items() if name == node), None)


def connect(address: str, state: dict | None = None):
    """An SSH connection (tools/ssh.py, recorded) to ``address`` with its settings."""
    from foundation_cli.tools import ssh

    h = host_ssh(address, state)
    opts = ssh.SSHOptions(
        user=h.user,
        port=h.port,
        identity_file=h.identity_file,
        known_hosts=h.known_hosts,
        host_proxy_jump={address: h.proxy_jump} if h.proxy_jump else {},
        sudo_password_env=h.sudo_password_env,
        sudo_password_file=h.sudo_password_file,
    )
    return ssh.connect(address, opts)


def require_address(node: str, catalog_address: str | None, state: dict | None = None) -> str:
    address = node_address(node, state) or catalog_address
    if not address:
        raise NotFoundError(f"node {node!r} is not in the catalog")
    return address
