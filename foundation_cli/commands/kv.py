"""``foundation kv``: plain Consul KV under the cluster's prefix (``foundation/kv/``)."""

from __future__ import annotations

import sys

import typer

from foundation_cli.commands.common import command, current, group
from foundation_cli.commands.completion import kv_keys

app = group(
    "kv",
    "Read and write plain Consul KV under foundation/kv/.\n\nExample: foundation kv put app/mode blue --explain",
)


def _store():
    from foundation_cli.facades.kv import KVStore

    return KVStore(current().consul())


@command(app, "get")
def get(key: str = typer.Argument(..., help="Key, relative to foundation/kv/.", autocompletion=kv_keys)) -> None:
    """Print the value of KEY (raw bytes to stdout; --json for metadata).

    Example: foundation kv get app/mode
    """
    entry = _store().get(key)
    run = current()
    if run.settings.json:
        run.out.json(entry.to_dict())
    else:
        run.out.value(entry.value or b"")


@command(app, "put")
def put(
    key: str = typer.Argument(..., help="Key, relative to foundation/kv/.", autocompletion=kv_keys),
    value: str = typer.Argument(..., help="Value; '-' reads it from stdin."),
    cas: int | None = typer.Option(
        None, "--cas", help="Only write if the key's modify index is still N (0: only if absent)."
    ),
    flags: int | None = typer.Option(None, "--flags", help="Opaque 64-bit integer stored with the value."),
) -> None:
    """Store VALUE at KEY.

    Example: foundation kv put app/mode blue --explain
    """
    # surrogateescape: a value given as non-UTF-8 argv bytes is stored as exactly those bytes
    data = sys.stdin.buffer.read() if value == "-" else value.encode("utf-8", "surrogateescape")
    _store().put(key, data, cas=cas, flags=flags)
    run = current()
    dry = run.settings.dry_run
    run.out.result({"key": key, "stored": not dry, "bytes": len(data)}, text=None)
    run.out.info(f"{'would store' if dry else 'stored'} {key} ({len(data)} bytes)")


@command(app, "delete")
def delete(
    key: str = typer.Argument(
        "", help="Key (or prefix with --recurse), relative to foundation/kv/.", autocompletion=kv_keys
    ),
    recurse: bool = typer.Option(False, "--recurse", help="Delete every key under the prefix KEY."),
    cas: int | None = typer.Option(None, "--cas", help="Only delete if the key's modify index is still N."),
) -> None:
    """Delete KEY (or everything under it with --recurse).

    Example: foundation kv delete app/mode
    """
    _store().delete(key, recurse=recurse, cas=cas)
    run = current()
    dry = run.settings.dry_run
    run.out.result({"key": key, "deleted": not dry, "recurse": recurse}, text=None)
    run.out.info(f"{'would delete' if dry else 'deleted'} {key}{' (recursive)' if recurse else ''}")


@command(app, "list")
def list_(prefix: str = typer.Argument("", help="Only keys under this prefix.", autocompletion=kv_keys)) -> None:
    """List keys (and values) under PREFIX.

    Example: foundation kv list app/
    """
    entries = _store().list(prefix)
    run = current()
    if run.settings.json:
        run.out.json([e.to_dict() for e in entries])
        return
    rows = []
    for e in entries:
        d = e.to_dict()
        value = d["value"] if d["encoding"] == "utf-8" else f"<{len(e.value or b'')} bytes binary>"
        if value is not None and len(value) > 60:
            value = value[:57] + "..."
        rows.append((e.key, value, e.modify_index))
    if not rows:
        run.out.info(f"no keys under {prefix or '(root)'}")
        return
    run.out.table(("KEY", "VALUE", "INDEX"), rows)
