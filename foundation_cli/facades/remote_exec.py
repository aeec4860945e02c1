"""``foundation exec``: run one command on chosen nodes over SSH, in parallel (not ``consul exec``).

Nodes are chosen from the Consul catalog (``--node``, ``--service``,
``--tag``, ``--all``) and reached at the address ``foundation up`` knows for
them (else the catalog's), each with its own SSH settings (facades/remote.py).
Each run is recorded as an ``ssh`` operation, so ``--explain`` shows it and
``--dry-run`` prints the ssh commands without connecting.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from foundation_cli.errors import FoundationError, NotFoundError, UsageError

FIRST_LINES = 2


@dataclass
class NodeRun:
    node: str
    address: str | None
    exit_code: int | None = None
    duration: float = 0.0
    stdout: str = ""
    stderr: str = ""
    error: str | None = None  # could not run at all (unreachable, auth)

    @property
    def ok(self) -> bool:
        return self.error is None and self.exit_code == 0

    def first_lines(self, n: int = FIRST_LINES) -> str:
        text = self.error or (self.stdout.strip() or self.stderr.strip())
        lines = text.splitlines()
        more = " …" if len(lines) > n else ""
        return " | ".join(line.strip() for line in lines[:n]) + more

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "address": self.address,
            "exit_code": self.exit_code,
            "ok": self.ok,
            "duration_s": round(self.duration, 3),
            "stdout": self.stdout,
            "stderr": self.stderr,
            "error": self.error,
        }


def select_nodes(
    client, *, nodes: list[str] | None, service: str | None, tag: str | None, all_nodes: bool
) -> dict[str, str | None]:
    """Node name → catalog address, for exactly one kind of selection."""
    chosen = sum(bool(x) for x in (nodes, service or tag, all_nodes))
    if chosen != 1:
        raise UsageError(
            "choose the nodes with exactly one of --node, --service/--tag or --all",
            hint="foundation exec --all -- uptime",
        )
    _i, catalog = client.catalog.nodes()
    addresses = {n.get("Node"): n.get("Address") for n in catalog or []}
    if all_nodes:
        return dict(sorted(addresses.items()))
    if nodes:
        missing = [n for n in nodes if n not in addresses]
        if missing:
            raise NotFoundError(
                f"no node named {', '.join(missing)} in the catalog", hint="nodes: " + ", ".join(sorted(addresses))
            )
        return {n: addresses[n] for n in dict.fromkeys(nodes)}
    if service:
        names = [service]
    else:
        _i, services = client.catalog.services()
        names = sorted(name for name, tags in (services or {}).items() if tag in (tags or []))
    out: dict[str, str | None] = {}
    for name in names:
        _i, instances = client.catalog.service(name)
        for inst in instances or []:
            if tag and tag not in (inst.get("ServiceTags") or []):
                continue
            out[inst.get("Node")] = addresses.get(inst.get("Node")) or inst.get("Address")
    if not out:
        what = f"service {service!r}" + (f" with tag {tag!r}" if tag else "") if service else f"tag {tag!r}"
        raise NotFoundError(f"no node runs {what}", hint="`foundation services` lists them")
    return dict(sorted(out.items()))


def run_on(
    targets: dict[str, str | None], command: str, *, timeout: float, parallel: int = 10, dry_run: bool = False
) -> list[NodeRun]:
    """Run ``command`` on every target (at most ``parallel`` SSH sessions at once)."""
    from foundation_cli import cluster_state
    from foundation_cli.facades import remote

    state = cluster_state.load() or {}

    def one(node: str, catalog_address: str | None) -> NodeRun:
        address = remote.node_address(node, state) or catalog_address
        result = NodeRun(node, address)
        started = time.monotonic()
        try:  # worker threads record into the run's process-wide recorder (set_process_recorder)
            if not address:
                raise NotFoundError(f"no address for node {node!r}")
            if dry_run:  # shown as the ssh command it would be; no connection
                _record_dry(address, command, state)
                return result
            conn = remote.connect(address, state)
            try:
                res = conn.run(command, write=True, sudo=False, timeout=timeout)
            finally:
                conn.close()
            result.exit_code, result.stdout, result.stderr = res.status, res.stdout, res.stderr
        except FoundationError as exc:
            result.error = exc.message
        result.duration = time.monotonic() - started
        return result

    with ThreadPoolExecutor(max_workers=max(1, min(parallel, len(targets) or 1))) as pool:
        futures = [pool.submit(one, node, addr) for node, addr in targets.items()]
        return [f.result() for f in futures]


def _record_dry(address: str, command: str, state: dict) -> None:
    from foundation_cli.facades import remote
    from foundation_cli.raw.operation import RawOperation
    from foundation_cli.raw.recorder import current_recorder

    h = remote.host_ssh(address, state)
    op = RawOperation(kind="ssh-exec", host=address, user=h.user or "", port=h.port or 22, command=command)
    op.dry_run = True
    op.finish(summary="not sent (dry run)")
    current_recorder().add(op)
