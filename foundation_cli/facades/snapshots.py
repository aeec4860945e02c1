"""``foundation snapshot save|restore|list``: Consul's snapshot API plus the scheduled ones (core/snapshots.py).

``save`` is ``GET /v1/snapshot`` written to a file (0600); ``--from-scheduled``
instead fetches a snapshot the leader's agent took: from this machine when it
is that node and the file is here, else over SSH (``base64 FILE``) with the
cluster's SSH settings, checked against the sha256 in the index. ``restore``
is ``PUT /v1/snapshot`` with the file (the servers' state is replaced).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shlex
from pathlib import Path
from typing import Any

from foundation_cli.core import keys, snapshots
from foundation_cli.errors import FoundationError, NotFoundError, UsageError


def write_private(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` with mode 0600 from the first byte (a snapshot holds ACL tokens)."""
    path = path.expanduser()
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


class Snapshots:
    def __init__(self, client, *, dry_run: bool = False) -> None:
        self.client = client
        self.dry_run = dry_run

    def list(self) -> list[snapshots.SnapshotEntry]:
        _i, items = self.client.kv.get(keys.SNAPSHOTS, recurse=True)
        return snapshots.entries(items)

    def save(self, path: Path, *, stale: bool = False) -> dict[str, Any]:
        archive = self.client.snapshot.save(stale=stale)
        write_private(path, archive)
        return {"file": str(path), "size": len(archive), "sha256": hashlib.sha256(archive).hexdigest()}

    def pick(self, snap_id: str | None) -> snapshots.SnapshotEntry:
        entries = self.list()
        if not entries:
            raise NotFoundError(
                "no scheduled snapshot yet",
                hint="turn them on: foundation config set snapshot.interval 1h --cluster-wide",
            )
        if snap_id is None:
            return entries[-1]
        for entry in entries:
            if entry.id == snap_id:
                return entry
        raise NotFoundError(f"no scheduled snapshot {snap_id!r}", hint="`foundation snapshot list`")

    def fetch(self, entry: snapshots.SnapshotEntry) -> bytes:
        """The archive of a scheduled snapshot (local file or SSH), checked against its sha256."""
        archive = self._local(entry)
        how = "local file"
        if archive is None:
            archive = self._over_ssh(entry)
            how = "ssh"
        digest = hashlib.sha256(archive).hexdigest()
        if digest != entry.sha256 or len(archive) != entry.size:
            raise FoundationError(
                f"snapshot {entry.id} from {entry.node} ({how}) does not match its index entry "
                f"(sha256 {digest[:12]}…, {len(archive)} bytes; expected {entry.sha256[:12]}…, {entry.size})"
            )
        return archive

    def _local(self, entry: snapshots.SnapshotEntry) -> bytes | None:
        try:
            me = (self.client.agent.self().get("Config") or {}).get("NodeName")
        except FoundationError:
            me = None
        if me != entry.node or not os.path.exists(entry.path):
            return None
        try:
            return Path(entry.path).read_bytes()
        except PermissionError:
            return None

    def _over_ssh(self, entry: snapshots.SnapshotEntry) -> bytes:
        from foundation_cli.facades import remote

        _i, data = self.client.catalog.node(entry.node)
        address = remote.require_address(entry.node, ((data or {}).get("Node") or {}).get("Address"))
        conn = remote.connect(address)
        try:
            result = conn.run(f"base64 {shlex.quote(entry.path)}", write=False, sudo=True, timeout=120)
        finally:
            conn.close()
        if not result.ok:
            raise FoundationError(f"{entry.node}: cannot read {entry.path}: {result.stderr.strip() or result.status}")
        try:
            return base64.b64decode(result.stdout, validate=False)
        except ValueError as exc:
            raise FoundationError(f"{entry.node}: {entry.path}: unreadable base64 ({exc})") from None

    def restore(self, path: Path) -> dict[str, Any]:
        try:
            archive = path.expanduser().read_bytes()
        except OSError as exc:
            raise UsageError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if archive[:2] != b"\x1f\x8b":
            raise UsageError(f"{path}: not a Consul snapshot (expected a gzip archive)")
        self.client.snapshot.restore(archive)
        return {"file": str(path), "size": len(archive), "sha256": hashlib.sha256(archive).hexdigest()}
