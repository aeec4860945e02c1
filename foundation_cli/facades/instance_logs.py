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


def reader_for(manager, node: str, path: str):
    """Local when the instance's node is the node of the Consul agent we talk to and the file is here."""
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
