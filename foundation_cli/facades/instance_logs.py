"""Reading an instance's log file where it lives: on this machine, or on its node over SSH.

The agent serves nothing extra: its log file is a plain file on the node
(``output.log`` in the instance's directory, path reported in the status
record), so ``foundation logs`` does what a person would do — ``tail`` it
locally, or ``ssh node tail`` with the cluster's SSH settings (from the state
``foundation up`` wrote: user, identity file, known_hosts).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from collections.abc import Iterator

from foundation_cli.errors import FoundationError, NotFoundError
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import current_recorder


def _tail_argv(path: str, lines: int, follow: bool) -> list[str]:
    return ["tail", "-n", str(max(0, lines))] + (["-F"] if follow else []) + [path]


class LocalReader:
    how = "local file"

    def __init__(self, path: str) -> None:
        self.path = path

    def tail(self, *, lines: int, follow: bool) -> Iterator[str]:
        argv = _tail_argv(self.path, lines, follow)
        op = RawOperation(kind="local-process", argv=argv, read_only=True)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, errors="replace")
        try:
            assert proc.stdout is not None
            yield from iter(proc.stdout.readline, "")
        finally:
            proc.terminate()
            proc.wait()
            op.finish(status=proc.returncode)
            current_recorder().add(op)


class SSHReader:
    how = "ssh"

    def __init__(self, address: str, path: str) -> None:
        self.address = address
        self.path = path

    def tail(self, *, lines: int, follow: bool) -> Iterator[str]:
        from foundation_cli.facades import remote

        command = " ".join(shlex.quote(a) for a in _tail_argv(self.path, lines, follow))
        conn = remote.connect(self.address)  # the host's own SSH settings from foundation.yaml, else ssh:
        try:
            if not follow:
                result = conn.run(command, write=False, sudo=True, timeout=30)
                if not result.ok:
                    raise FoundationError(f"{self.address}: cannot read {self.path}: {result.stderr.strip()}")
                yield result.stdout
                return
            op = conn._op("ssh-exec", command=command, read_only=True)
            current_recorder().add(op)
            channel = conn._client.get_transport().open_session()  # streaming: run() buffers
            channel.exec_command(command)
            while True:
                data = channel.recv(4096)
                if not data:
                    break
                yield data.decode("utf-8", "replace")
        finally:
            conn.close()


def check_log_path(path: str, node: str, name: str | None) -> str:
    """The log path an instance's status record names, if it is where an agent keeps one.

    The record is data in KV (anyone who can write it chooses the path): only
    ``<data root>/nodes/<node>/services/<name>/output.log`` -- absolute, no ``..``, no
    control characters -- is tailed, never an arbitrary file.
    """
    from foundation_cli.errors import UsageError

    parts = path.split("/")
    ok = (
        path.startswith("/")
        and not any(ord(c) < 0x20 or ord(c) == 0x7F for c in path)
        and not any(p in (".", "..") for p in parts)
        and "//" not in path
        and len(parts) >= 6
        and parts[-5:-3] == ["nodes", node]
        and parts[-3] == "services"
        and (name is None or parts[-2] == name)
        and parts[-1] == "output.log"
    )
    if not ok:
        raise UsageError(
            f"refusing to read {ascii(path)[:120]}: not an agent's instance log (…/nodes/{node}/services/"
            f"{name or '<name>'}/output.log)",
            hint="the instance's status record in KV names another file; re-register the service or check who "
            "writes under foundation/",
        )
    return path


def reader_for(manager, node: str, path: str, *, name: str | None = None):
    """Local when the instance's node is the node of the Consul agent we talk to and the file is here."""
    check_log_path(path, node, name)
    try:
        local = manager.local_node()
    except FoundationError:
        local = None
    if node == local and os.path.exists(path):
        return LocalReader(path)
    address = manager.node_address(node)
    if not address:
        raise NotFoundError(f"node {node!r} is not in the catalog")
    return SSHReader(address, path)
