"""TLS on by default for multi-host clusters, with Consul's own ``consul tls`` commands.

On the operator's machine, in ``<state dir>/tls`` (mode 0700, keys 0600):

    consul-agent-ca.pem / consul-agent-ca-key.pem      ``consul tls ca create``
    server-<node>-<ip>.pem / …-key.pem                 ``consul tls cert create -server -dc DC
                                                        -additional-ipaddress IP -additional-dnsname NODE``

The CA key never leaves the operator's machine. Each server gets the CA certificate and its own
certificate and key; clients get only the CA certificate and obtain theirs from the servers
(``auto_encrypt``, signed by Consul's Connect CA). On every host the HTTP API answers plain HTTP
on loopback only (``addresses.http = 127.0.0.1``: the node agent's local calls); servers also
answer HTTPS on their address (``ports.https``), the only API the CLI uses; clients have no
HTTPS listener (nothing could verify their Connect-CA certificate against the cluster CA). RPC
between agents is TLS with verified server names.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from foundation_cli.core import cluster_state
from foundation_cli.errors import FoundationError, UsageError
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import current_recorder

HOST_DIR = "/etc/foundation/tls"
HOST_CA = f"{HOST_DIR}/ca.pem"
HOST_CERT = f"{HOST_DIR}/server.pem"
HOST_KEY = f"{HOST_DIR}/server-key.pem"
DEFAULT_HTTPS_PORT = 8501
CA_DAYS = 3650
CERT_DAYS = 3650


def tls_dir() -> Path:
    return cluster_state.state_dir() / "tls"


def ca_paths() -> tuple[Path, Path]:
    d = tls_dir()
    return d / "consul-agent-ca.pem", d / "consul-agent-ca-key.pem"


def _consul(explicit: str | None) -> str:
    path = shutil.which(explicit or "consul") if not (explicit and os.path.sep in explicit) else explicit
    if not path:
        raise UsageError(
            "TLS needs the consul CLI on this machine (consul tls ca/cert create)",
            hint="install Consul (scripts/install-consul.sh) or pass --consul-binary PATH",
        )
    return path


def _run(argv: list[str], cwd: Path) -> None:
    """Run a ``consul tls`` command in ``cwd`` (recorded; withheld in a dry run); keys made 0600."""
    recorder = current_recorder()
    op = RawOperation(kind="local-process", argv=["sh", "-c", f"cd {cwd} && umask 077 && " + " ".join(argv)])
    if recorder.dry_run:
        op.dry_run = True
        op.finish(summary="not run (dry run)")
        recorder.add(op)
        return
    old = os.umask(0o077)
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        op.finish(error=str(exc))
        recorder.add(op)
        raise FoundationError(f"could not run {argv[0]}: {exc}") from None
    finally:
        os.umask(old)
    op.finish(status=proc.returncode, summary=(proc.stdout.strip().splitlines() or [""])[-1][:80])
    recorder.add(op)
    if proc.returncode != 0:
        raise FoundationError(f"{' '.join(argv[:4])} failed: {(proc.stderr or proc.stdout).strip()[:200]}")


def ensure_ca(consul_binary: str | None = None) -> Path:
    """The cluster's CA (made once, kept in the state dir); returns the CA certificate's path."""
    ca, key = ca_paths()
    if ca.exists() and key.exists():
        return ca
    d = tls_dir()
    if not current_recorder().dry_run:
        d.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        d.mkdir(exist_ok=True, mode=0o700)
    _run([_consul(consul_binary), "tls", "ca", "create", f"-days={CA_DAYS}"], d)
    return ca


def ensure_server_cert(node: str, address: str, datacenter: str, consul_binary: str | None = None) -> tuple[Path, Path]:
    """This server's certificate and key (server.<dc>.consul, localhost, 127.0.0.1, its address, its name)."""
    d = tls_dir()
    safe = "".join(c if c.isalnum() or c in "-." else "-" for c in f"{node}-{address}")
    cert, key = d / f"server-{safe}.pem", d / f"server-{safe}-key.pem"
    if cert.exists() and key.exists():
        return cert, key
    ca, ca_key = ca_paths()
    argv = [
        _consul(consul_binary),
        "tls",
        "cert",
        "create",
        "-server",
        f"-dc={datacenter}",
        f"-days={CERT_DAYS}",
        f"-ca={ca}",
        f"-key={ca_key}",
        f"-additional-ipaddress={address}",
        f"-additional-dnsname={node}",
    ]
    if current_recorder().dry_run:
        _run(argv, d)
        return cert, key
    with tempfile.TemporaryDirectory(dir=d) as tmp:
        _run(argv, Path(tmp))
        made = sorted(Path(tmp).glob(f"{datacenter}-server-consul-*.pem"))
        pem = [p for p in made if not p.name.endswith("-key.pem")]
        pem_key = [p for p in made if p.name.endswith("-key.pem")]
        if not pem or not pem_key:
            raise FoundationError(f"consul tls cert create made no certificate for {node}")
        os.replace(pem_key[0], key)
        os.replace(pem[0], cert)
    return cert, key


def read(path: Path) -> bytes:
    """A certificate or key to upload (in a dry run of a first `up` it does not exist yet)."""
    try:
        return path.read_bytes()
    except OSError:
        if current_recorder().dry_run:
            return f"(made by consul tls: {path.name})\n".encode()
        raise


def agent_config(*, server: bool, address: str, https_port: int = DEFAULT_HTTPS_PORT) -> dict[str, Any]:
    """The TLS part of one agent's config (merged over Foundation's defaults, under the wizard's ``consul:``)."""
    conf: dict[str, Any] = {
        "ca_file": HOST_CA,
        "verify_outgoing": True,
        "verify_server_hostname": True,
        "verify_incoming_rpc": True,
        "verify_incoming_https": False,
        "addresses": {"http": "127.0.0.1"},
    }
    if server:
        conf.update(
            cert_file=HOST_CERT, key_file=HOST_KEY, auto_encrypt={"allow_tls": True}, ports={"https": https_port}
        )
    else:
        # No HTTPS listener: a client's auto_encrypt certificate is signed by Consul's Connect CA,
        # not by the cluster CA the CLI trusts, so nobody could verify it. Its API is plain HTTP on
        # loopback (the node agent); the CLI talks to the servers only.
        conf["auto_encrypt"] = {"tls": True, "ip_san": [address]}
    return conf
