"""The local cluster state file ``foundation up`` writes (mode 0600).

Holds what later commands need to reach the cluster with no flags: the
Consul HTTP address of a reachable server, the operator token (wizard/ACL
mode), the cluster id, the servers and where the gossip key is kept.
Location: ``$FOUNDATION_STATE_DIR`` or ``$XDG_STATE_HOME/foundation``
(default ``~/.local/state/foundation``), file ``state.json``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def state_dir() -> Path:
    """Directory for Foundation's local state (created by :func:`save`)."""
    explicit = os.environ.get("FOUNDATION_STATE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "foundation"


def state_path() -> Path:
    return state_dir() / "state.json"


def load() -> dict[str, Any] | None:
    """The saved state, or ``None`` when there is none or it is unreadable."""
    try:
        with open(state_path(), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save(data: dict[str, Any]) -> Path:
    """Write the state atomically with mode 0600 (it may hold a token)."""
    path = state_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")
    os.replace(tmp, path)
    return path


def clear() -> None:
    """Remove the state file (``foundation down`` of the whole cluster)."""
    try:
        state_path().unlink()
    except FileNotFoundError:
        pass
