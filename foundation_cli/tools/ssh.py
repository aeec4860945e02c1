"""SSH adapter (paramiko): every command and upload recorded as it is sent.

One :class:`Connection` per host. :meth:`Connection.run` records an
``ssh-exec`` operation, :meth:`Connection.upload` an ``ssh-upload`` (path,
content, mode). In a dry run, writes are recorded and not sent; probes
(``write=False``) still run because they plan the writes.

Honoured like OpenSSH: ``~/.ssh/config`` (HostName, User, Port, IdentityFile,
ProxyJump, UserKnownHostsFile), ssh-agent, key files (passphrase asked once).
Host keys are checked against known_hosts: an unknown or changed key stops
the host; ``accept_new_host_keys`` adds unknown ones, never changed ones.
Non-root users get ``sudo -n``; if sudo wants a password it is asked once and
sent on stdin, never on a command line, never recorded -- and only when sudo
shows its prompt (a unique one per command): with cached credentials sudo asks
nothing, and a password sent ahead of stdin would reach the command (the
first line of an uploaded file). See :func:`_sudo_password_wrap`.

paramiko/socket errors become :class:`UnreachableError`,
:class:`PermissionDeniedError` or :class:`HostKeyError` here, at the edge.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from foundation_cli.errors import FoundationError, PermissionDeniedError, UnreachableError, UsageError
from foundation_cli.raw import secrets
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import current_recorder

Prompt = Callable[[str], str]


class HostKeyError(PermissionDeniedError):
    """The host's key is unknown (and not accepted) or has changed."""


HANDSHAKE_TIMEOUT = 10.0  # lower bound for the waits after the TCP connect (see Connection.handshake_timeout)


@dataclass
class SSHOptions:
    """How to reach hosts: foundation.yaml's ``ssh:`` plus command-line flags."""

    user: str | None = None
    port: int | None = None
    identity_file: str | None = None
    known_hosts: str | None = None
    config_file: str | None = None
    connect_timeout: float = 10.0  # the TCP connect only: how long a host that is down keeps you waiting
    accept_new_host_keys: bool = False
    prompt: Prompt | None = None  # asks for passphrases / the sudo password (getpass in the CLI)
    proxy_jump: str | None = None  # ``ssh.proxy_jump``: [user@]bastion[:port] for hosts ~/.ssh/config gives none
    host_proxy_jump: dict[str, str] = field(default_factory=dict)  # ``hosts[].proxy_jump``, by alias
    # Where the sudo password comes from when sudo asks (never a command line): an environment
    # variable's name, or a file (first line); else ``prompt``.
    sudo_password_env: str | None = None
    sudo_password_file: str | None = None


@dataclass
class Target:
    """A host as resolved through ~/.ssh/config."""

    alias: str
    hostname: str
    user: str
    port: int
    identity_files: list[str] = field(default_factory=list)
    proxy_jump: str | None = None
    known_hosts: str | None = None


@dataclass
class ExecResult:
    status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.status == 0


def _ssh_config(path: str | None):
    import paramiko

    cfg_path = Path(path or "~/.ssh/config").expanduser()
    if cfg_path.is_file():
        try:
            return paramiko.SSHConfig.from_path(str(cfg_path))
        except Exception as exc:  # noqa: BLE001 - any parse problem is the user's file
            raise UsageError(f"{cfg_path}: cannot parse SSH config: {exc}") from None
    return paramiko.SSHConfig()


def resolve_target(
    alias: str, opts: SSHOptions, *, user: str | None = None, port: int | None = None, identity: str | None = None
) -> Target:
    """Per-host settings (foundation.yaml) win over ~/.ssh/config, which wins over ``ssh:`` defaults."""
    conf = _ssh_config(opts.config_file).lookup(alias)
    hostname = conf.get("hostname", alias)
    the_user = user or conf.get("user") or opts.user or _local_user()
    the_port = port or (int(conf["port"]) if "port" in conf else None) or opts.port or 22
    identities = [identity] if identity else []
    identities += list(conf.get("identityfile", []))
    if opts.identity_file:
        identities.append(opts.identity_file)
    known = opts.known_hosts or (conf.get("userknownhostsfile", "").split() or [None])[0]
    return Target(
        alias=alias,
        hostname=hostname,
        user=the_user,
        port=the_port,
        identity_files=[str(Path(p).expanduser()) for p in identities],
        proxy_jump=opts.host_proxy_jump.get(alias) or conf.get("proxyjump") or opts.proxy_jump,
        known_hosts=str(Path(known).expanduser()) if known else None,
    )


def _local_user() -> str:
    import getpass

    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "root"


_prompt_lock = threading.Lock()
_passphrases: dict[str, str] = {}


class _NeedsPassphrase(Exception):
    pass


def _read_key(path: str, passphrase: str | None):
    import paramiko

    try:
        return paramiko.PKey.from_path(path, password=passphrase.encode() if passphrase is not None else None)
    except paramiko.PasswordRequiredException:
        raise _NeedsPassphrase() from None
    except TypeError as exc:  # cryptography's OpenSSH loader says it this way
        if "password" in str(exc).lower() and passphrase is None:
            raise _NeedsPassphrase() from None
        raise ValueError(str(exc)) from None


def load_key(path: str, prompt: Prompt | None):
    """A private key from ``path``; asks for its passphrase once (cached per file)."""
    import paramiko

    if not os.path.isfile(path):
        raise UsageError(f"{path}: key file not found", hint="check ssh.identity_file in foundation.yaml")
    try:
        return _read_key(path, _passphrases.get(path))
    except _NeedsPassphrase:
        if prompt is None:
            raise PermissionDeniedError(f"{path}: key file needs a passphrase", hint="add it to ssh-agent") from None
        with _prompt_lock:
            if path not in _passphrases:
                _passphrases[path] = prompt(f"Passphrase for {path}: ")
                secrets.register(_passphrases[path])
        try:
            return _read_key(path, _passphrases[path])
        except (paramiko.SSHException, ValueError, _NeedsPassphrase):
            _passphrases.pop(path, None)
            raise PermissionDeniedError(f"{path}: wrong passphrase for key file") from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "PEM" in reason or "not a valid" in reason.lower() or "unpack" in reason:
            reason = "not a private key, or a format paramiko cannot read"
        raise UsageError(f"{path}: bad key file: {reason}", hint="use an OpenSSH private key") from None


class _AcceptNew:
    """Host-key policy for ``--accept-new-host-keys``: add unknown keys and save them (changed keys still fail)."""

    def __init__(self, path: str | None, lock: threading.Lock) -> None:
        self.path = path
        self.lock = lock

    def missing_host_key(self, client, hostname, key) -> None:
        with self.lock:
            client.get_host_keys().add(hostname, key.get_name(), key)
            if self.path:
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                with open(self.path, "a", encoding="utf-8") as fh:
                    fh.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")


_known_hosts_lock = threading.Lock()


class Connection:
    """An SSH session to one host; every command and upload is recorded."""

    def __init__(self, target: Target, opts: SSHOptions) -> None:
        self.target = target
        self.opts = opts
        self._client = None
        self._jump = None
        self._sudo_password: str | None = None
        self._sudo_mode: str | None = None  # "root" | "nopasswd" | "password"

    @property
    def label(self) -> str:
        return self.target.alias

    @property
    def handshake_timeout(self) -> float:
        """Banner, auth and channel waits: a slow board's key exchange needs more than its TCP connect."""
        return max(self.opts.connect_timeout, HANDSHAKE_TIMEOUT)

    # -- connecting ---------------------------------------------------------------------------
    def connect(self) -> Connection:
        """Open the session (checks the host key; translates every failure)."""
        import paramiko

        _quiet_paramiko()
        t = self.target
        client = paramiko.SSHClient()
        known = t.known_hosts or os.path.expanduser("~/.ssh/known_hosts")
        try:
            if os.path.isfile(known):
                client.load_host_keys(known)
        except (OSError, paramiko.SSHException) as exc:
            raise UsageError(f"{known}: cannot read known_hosts: {exc}") from None
        if self.opts.accept_new_host_keys:
            client.set_missing_host_key_policy(_AcceptNew(known, _known_hosts_lock))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        pkey = None
        for path in t.identity_files:
            if os.path.isfile(path) or path in (self.opts.identity_file or ""):
                pkey = load_key(path, self.opts.prompt)
                break
        sock = self._proxy_sock() if t.proxy_jump else None
        where = f"{t.user}@{t.hostname}:{t.port}"
        try:
            client.connect(
                t.hostname,
                port=t.port,
                username=t.user,
                pkey=pkey,
                timeout=self.opts.connect_timeout,
                banner_timeout=self.handshake_timeout,
                auth_timeout=self.handshake_timeout,
                allow_agent=True,
                look_for_keys=pkey is None,
                sock=sock,
            )
        except paramiko.BadHostKeyException:
            client.close()
            raise HostKeyError(
                f"{t.alias}: host key has CHANGED (possible man-in-the-middle); refusing to connect",
                hint=f"if the machine was reinstalled: ssh-keygen -R {t.hostname} -f {known}",
            ) from None
        except paramiko.AuthenticationException:
            client.close()
            raise PermissionDeniedError(
                f"{where}: SSH authentication failed",
                hint="check ssh.user / ssh.identity_file in foundation.yaml, or ssh-add your key",
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            text = str(exc)
            if "not found in known_hosts" in text:
                raise HostKeyError(
                    f"{t.alias}: unknown host key ({t.hostname}:{t.port} is not in {known}); refusing to connect",
                    hint="verify it, then re-run with --accept-new-host-keys (or ssh-keyscan it into known_hosts)",
                ) from None
            if "banner" in text:
                text = "no SSH server answered (no protocol banner)"
            raise UnreachableError(f"{where}: SSH failed: {text.splitlines()[0] if text else 'error'}") from None
        except (OSError, EOFError) as exc:
            client.close()
            raise UnreachableError(
                f"{where}: cannot connect: {_socket_reason(exc)}",
                hint=f"is {t.hostname} on, on this network, with sshd on port {t.port}? "
                "(ssh.port / ssh.connect_timeout in foundation.yaml)",
            ) from None
        _no_delay(client.get_transport().sock)
        self._client = client
        return self

    def _proxy_sock(self):
        import paramiko

        jump_spec = self.target.proxy_jump or ""
        first = jump_spec.split(",")[0]
        user, _, hostport = first.rpartition("@")
        host, _, port = hostport.partition(":")
        # The bastion itself is reached directly (or as ~/.ssh/config says): not through the default
        # jump, and on its own port (the spec's, its ~/.ssh/config's, else 22), not the hosts' ssh.port.
        jump_opts = dataclasses.replace(self.opts, proxy_jump=None, host_proxy_jump={}, port=None)
        jump = Connection(
            resolve_target(host, jump_opts, user=user or None, port=int(port) if port else None), jump_opts
        )
        jump.connect()
        self._jump = jump
        try:
            transport = jump._client.get_transport()
            return transport.open_channel("direct-tcpip", (self.target.hostname, self.target.port), ("127.0.0.1", 0))
        except (paramiko.SSHException, OSError) as exc:
            raise UnreachableError(f"{self.target.alias}: cannot reach it through ProxyJump {first}: {exc}") from None

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._jump is not None:
            self._jump.close()
            self._jump = None

    def __enter__(self) -> Connection:
        return self.connect() if self._client is None else self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running ------------------------------------------------------------------------------
    def _raw_exec(
        self, command: str, stdin: bytes | None, timeout: float, *, sudo: _SudoHandshake | None = None
    ) -> ExecResult:
        import paramiko

        assert self._client is not None, "connect() first"
        try:
            chan = self._client.get_transport().open_session(timeout=self.handshake_timeout)
            chan.settimeout(timeout)
            chan.exec_command(command)
            early_err = b""
            if sudo is not None:
                early_err, started = sudo.run(chan)
                if not started:  # sudo stopped before the command: nothing of stdin may be sent
                    chan.shutdown_write()
                    status = chan.recv_exit_status()
                    chan.close()
                    return ExecResult(status or 1, "", early_err.decode("utf-8", "replace"))
            if stdin:
                # paramiko's sendall re-slices the whole buffer per packet (quadratic): feed it chunks.
                view = memoryview(stdin)
                for i in range(0, len(view), 1 << 18):
                    chan.sendall(view[i : i + (1 << 18)].tobytes())
            chan.shutdown_write()
            out = chan.makefile("rb").read()
            err = early_err + chan.makefile_stderr("rb").read()
            status = chan.recv_exit_status()
            chan.close()
        except TimeoutError:
            raise UnreachableError(f"{self.label}: command timed out after {timeout:.0f} s: {command[:60]}") from None
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise UnreachableError(f"{self.label}: SSH connection lost: {_socket_reason(exc)}") from None
        return ExecResult(status, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))

    def _sudo_wrap(self, command: str) -> tuple[str, _SudoHandshake | None]:
        """Wrap for sudo when not root; returns (command, the password handshake when sudo needs one)."""
        if self._sudo_mode is None:
            self._sudo_mode = self._probe_sudo()
        if self._sudo_mode == "root":
            return command, None
        if self._sudo_mode == "nopasswd":
            return f"sudo -n sh -c {shlex.quote(command)}", None
        return _sudo_password_wrap(command, self._sudo_password or "", self.label)

    def _probe_sudo(self) -> str:
        if self.target.user == "root":
            return "root"
        res = self._raw_exec("id -u", None, 30)
        if res.stdout.strip() == "0":
            return "root"
        res = self._raw_exec("sudo -n true", None, 30)
        if res.ok:
            return "nopasswd"
        configured = self._configured_sudo_password()
        if "password" not in (res.stderr or "").lower() or (self.opts.prompt is None and configured is None):
            raise PermissionDeniedError(
                f"{self.label}: {self.target.user} cannot use sudo: {res.stderr.strip() or 'denied'}",
                hint="connect as root, or allow sudo for this user",
            )
        with _prompt_lock:
            password = (
                _passphrases.get(f"sudo:{self.target.user}")
                or configured
                or self.opts.prompt(f"[sudo] password for {self.target.user} on the hosts: ")  # type: ignore[misc]
            )
            secrets.register(password)
        try:
            wrapped, handshake = _sudo_password_wrap("true", password, self.label)
            check = self._raw_exec(wrapped, None, 30, sudo=handshake)
        except PermissionDeniedError:
            check = ExecResult(1, "", "")
        if not check.ok:
            raise PermissionDeniedError(f"{self.label}: sudo password refused for {self.target.user}")
        _passphrases[f"sudo:{self.target.user}"] = password
        self._sudo_password = password
        return "password"

    def _configured_sudo_password(self) -> str | None:
        """The sudo password from ``ssh.sudo_password_env`` / ``ssh.sudo_password_file``, if set."""
        if self.opts.sudo_password_env:
            value = os.environ.get(self.opts.sudo_password_env)
            if value is None:
                raise UsageError(
                    f"ssh.sudo_password_env names {self.opts.sudo_password_env}, which is not set",
                    hint=f"export {self.opts.sudo_password_env}=… (or remove the setting to be asked)",
                )
            secrets.register(value)
            return value
        if self.opts.sudo_password_file:
            path = os.path.expanduser(self.opts.sudo_password_file)
            try:
                with open(path, encoding="utf-8") as fh:
                    value = fh.readline().rstrip("\r\n")
            except OSError as exc:
                raise UsageError(f"ssh.sudo_password_file {path}: {exc.strerror}") from None
            secrets.register(value)
            return value
        return None

    def _op(self, kind: str, **fields) -> RawOperation:
        t = self.target
        return RawOperation(kind=kind, host=t.hostname, user=t.user, port=t.port, proxy_jump=t.proxy_jump, **fields)  # type: ignore[arg-type]

    def run(
        self,
        command: str,
        *,
        write: bool = True,
        sudo: bool = True,
        stdin: bytes | None = None,
        stdin_desc: str | None = None,
        timeout: float = 120.0,
        check: bool = False,
    ) -> ExecResult:
        """Run ``command`` on the host (recorded as shown). Probes pass ``write=False`` and run in dry runs."""
        recorder = current_recorder()
        op = recorder.begin(self._op("ssh-exec", command=command, stdin_desc=stdin_desc, read_only=not write))
        if write and recorder.dry_run:
            op.dry_run = True
            op.finish(summary="not sent (dry run)")
            recorder.add(op)
            return ExecResult(0, "", "")
        try:  # a sudo refusal is this operation's error too (and --explain must not wait for it)
            wrapped, handshake = self._sudo_wrap(command) if sudo else (command, None)
            result = self._raw_exec(wrapped, stdin, timeout, sudo=handshake)
        except FoundationError as exc:
            op.finish(error=exc.message)
            recorder.add(op)
            raise
        tail = (result.stdout.strip().splitlines() or [""])[-1][:80]
        op.finish(
            status=result.status, summary=tail, error=result.stderr.strip()[:200] or None if not result.ok else None
        )
        recorder.add(op)
        if check and not result.ok:
            reason = (result.stderr.strip() or result.stdout.strip() or f"exit {result.status}").splitlines()[-1]
            raise FoundationError(f"{self.label}: `{_short(command)}` failed: {reason}")
        return result

    def upload(self, path: str, content: bytes, *, mode: int = 0o644, timeout: float = 300.0) -> None:
        """Write ``content`` to ``path`` atomically (temp file + rename), recorded as an ssh-upload."""
        recorder = current_recorder()
        op = recorder.begin(self._op("ssh-upload", path=path, content=content, mode=mode))
        if recorder.dry_run:
            op.dry_run = True
            op.finish(summary="not sent (dry run)")
            recorder.add(op)
            return
        from foundation_cli.raw.render import upload_command

        command = upload_command(path, mode, len(content))  # the same command the renderer shows
        try:
            wrapped, handshake = self._sudo_wrap(command)
            result = self._raw_exec(wrapped, content, timeout, sudo=handshake)
        except FoundationError as exc:
            op.finish(error=exc.message)
            recorder.add(op)
            raise
        op.finish(status=result.status, summary=f"{len(content)} bytes", error=result.stderr.strip()[:200] or None)
        recorder.add(op)
        if not result.ok:
            raise FoundationError(f"{self.label}: upload to {path} failed: {result.stderr.strip() or result.status}")

    def read_file(self, path: str) -> bytes | None:
        """A remote file's content (a probe), or ``None`` when it does not exist."""
        res = self.run(f"cat {shlex.quote(path)} 2>/dev/null || echo __FOUNDATION_MISSING__", write=False)
        if res.stdout.strip() == "__FOUNDATION_MISSING__":
            return None
        return res.stdout.encode("utf-8")


class _SudoHandshake:
    """Sends the sudo password only when sudo prints this command's unique prompt.

    The wrapped command prints a unique start marker on stderr before anything else, so
    the adapter knows when sudo is done: prompt seen -> send the password (once; a
    second prompt means it was refused); start marker seen -> the command runs, stdin
    may follow. Cached credentials: no prompt, the password is never sent.
    """

    def __init__(self, prompt: str, started: str, password: str, label: str) -> None:
        self.prompt = prompt.encode()
        self.started = started.encode() + b"\n"
        self.password = password
        self.label = label

    def run(self, chan) -> tuple[bytes, bool]:
        """Wait for the start marker; returns (stderr seen besides prompt and marker, whether it started)."""
        buf = b""
        sent = False
        while True:
            if self.started in buf:
                before, _, after = buf.partition(self.started)
                return before + after, True
            if self.prompt in buf:
                if sent:
                    chan.close()
                    raise PermissionDeniedError(f"{self.label}: sudo password refused")
                buf = buf.replace(self.prompt, b"", 1)
                chan.sendall(self.password.encode() + b"\n")
                sent = True
                continue
            chunk = chan.recv_stderr(4096)  # blocks up to the channel timeout
            if not chunk:
                return buf, False
            buf += chunk


def _sudo_password_wrap(command: str, password: str, label: str) -> tuple[str, _SudoHandshake]:
    """``sudo -S -p <unique prompt> sh -c '<start marker>; command'`` and its handshake."""
    import secrets as _random

    token = _random.token_hex(8)
    prompt = f"[foundation-sudo-{token}] password: "
    started = f"[foundation-started-{token}]"
    inner = f"printf '%s\\n' {shlex.quote(started)} >&2\n{command}"
    wrapped = f"sudo -S -p {shlex.quote(prompt)} sh -c {shlex.quote(inner)}"
    return wrapped, _SudoHandshake(prompt, started, password, label)


def _quiet_paramiko() -> None:
    """paramiko logs transport-thread failures with tracebacks; we report them ourselves, in one line."""
    import logging

    logger = logging.getLogger("paramiko")
    if not logger.handlers:
        logger.addHandler(logging.NullHandler())
        logger.propagate = False


def _no_delay(sock: object) -> None:
    """Send each SSH packet at once (TCP_NODELAY, as OpenSSH does).

    paramiko leaves Nagle's algorithm on: a command's small packets (the exec request, stdin,
    its end) then wait for the host's delayed ACK, ~40 ms each time, so that a 37-byte upload
    took ~90 ms. A ProxyJump channel is not a socket: the bastion's own connection has it set.
    """
    if isinstance(sock, socket.socket) and sock.family in (socket.AF_INET, socket.AF_INET6):
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:  # not worth failing a connection for
            pass


def _short(command: str) -> str:
    first = command.strip().splitlines()[0] if command.strip() else command
    return first if len(first) <= 60 else first[:57] + "..."


def _socket_reason(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc)
    for needle, reason in (
        ("Unable to connect", "connection refused"),
        ("timed out", "timed out"),
        ("No route to host", "no route to host"),
        ("Name or service not known", "unknown host"),
        ("Network is unreachable", "network unreachable"),
    ):
        if needle in text:
            return reason
    return text.splitlines()[0] if text else type(exc).__name__


def connect(
    alias: str,
    opts: SSHOptions,
    *,
    user: str | None = None,
    port: int | None = None,
    identity: str | None = None,
) -> Connection:
    """Resolve ``alias`` (``~/.ssh/config``) and open a recorded SSH connection to it."""
    return Connection(resolve_target(alias, opts, user=user, port=port, identity=identity), opts).connect()
