"""Consul snapshots: scheduled ones taken by the leader's agent, kept on that node, indexed in KV.

A snapshot (``GET /v1/snapshot``) is the servers' whole state: KV, sessions,
catalog, ACLs. The scheduled ones are files on the node whose agent took it
(``<data>/nodes/<node>/snapshots/<id>.snap``, mode 0600) with one index entry
each under ``foundation/snapshots/<id>`` (node, path, size, sha256, taken, the
Raft index it was taken at). The archive itself never goes into KV: every
later snapshot would contain all earlier ones.

Rotation: after each scheduled snapshot the leader's agent deletes the index
entries beyond ``snapshot.keep`` (oldest first); every agent deletes its own
files that have no index entry any more (a file left by an earlier leader
goes when that node's agent next looks).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from foundation_cli.core import keys

DEFAULT_KEEP = 24
INTERVAL_KEY = "snapshot.interval"
KEEP_KEY = "snapshot.keep"


@dataclass
class SnapshotEntry:
    id: str
    node: str
    path: str
    size: int
    sha256: str
    taken: float
    index: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_kv(cls, item: dict) -> SnapshotEntry | None:
        try:
            data = json.loads(item.get("Value") or b"")
            return cls(
                id=item["Key"][len(keys.SNAPSHOTS) :],
                node=str(data["node"]),
                path=str(data["path"]),
                size=int(data["size"]),
                sha256=str(data["sha256"]),
                taken=float(data["taken"]),
                index=int(data["index"]) if data.get("index") is not None else None,
            )
        except (KeyError, TypeError, ValueError):
            return None


def snapshot_id(now: float | None = None) -> str:
    """Sortable, unique per second: ``20261201T141500Z``."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now if now is not None else time.time()))


def entries(items: list[dict] | None) -> list[SnapshotEntry]:
    """Index entries from a recursive KV read, oldest first (bad entries skipped)."""
    out = [e for e in (SnapshotEntry.from_kv(i) for i in items or []) if e is not None and "/" not in e.id]
    return sorted(out, key=lambda e: e.id)


def to_prune(current: list[SnapshotEntry], keep: int) -> list[SnapshotEntry]:
    """The oldest entries beyond ``keep`` (``keep`` ≥ 1)."""
    keep = max(1, keep)
    ordered = sorted(current, key=lambda e: e.id)
    return ordered[: max(0, len(ordered) - keep)]


def parse_keep(text: str) -> int:
    """``snapshot.keep``: how many scheduled snapshots to keep (1–1000)."""
    try:
        value = int(str(text).strip())
    except ValueError:
        raise ValueError("expected a whole number") from None
    if not 1 <= value <= 1000:
        raise ValueError("must be between 1 and 1000")
    return value


def write_file(directory: Path, snap_id: str, archive: bytes) -> Path:
    """Store an archive 0600, atomically."""
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = directory / f"{snap_id}.snap"
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(archive)
    os.replace(tmp, path)
    return path


def entry_for(snap_id: str, node: str, path: Path, archive: bytes, taken: float, index: int | None) -> SnapshotEntry:
    return SnapshotEntry(
        id=snap_id,
        node=node,
        path=str(path),
        size=len(archive),
        sha256=hashlib.sha256(archive).hexdigest(),
        taken=round(taken, 3),
        index=index,
    )


def index_value(entry: SnapshotEntry) -> str:
    data = entry.to_dict()
    data.pop("id")
    return json.dumps(data, sort_keys=True)


def orphan_files(directory: Path, node: str, indexed: list[SnapshotEntry]) -> list[Path]:
    """This node's snapshot files that no index entry names any more."""
    if not directory.is_dir():
        return []
    known = {e.path for e in indexed if e.node == node}
    return sorted(p for p in directory.glob("*.snap") if str(p) not in known)
