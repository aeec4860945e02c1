"""Test hosts as network namespaces on a bridge, each looking like its own machine.

Each host is a network namespace with a veth on the lab bridge, and an OpenSSH
server started under ``unshare --mount --uts --propagation private`` that
first mounts overlays over /etc, /opt, /var, /usr/local, /root and /home
(lower: the machine's real directory; upper: the host's own directory), binds
private /run and /tmp, and sets the hostname. Whatever runs inside the host
(via SSH, or :meth:`Host.exec`/:meth:`Host.popen`, which ``nsenter`` the sshd's
namespaces) sees the machine's programs and Python packages, but its writes
stay its own. Host keys are pinned in the lab's known_hosts; root logs in with
the lab's client key.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.lab import procs
from tests.lab.slots import Slot, claim, clean_slot, netns_pids

OVERLAY_DIRS = ("/etc", "/opt", "/var", "/usr/local", "/root", "/home")
SSHD = "/usr/sbin/sshd"
# The machine's python3 (and its packages) first, so `python3 -m foundation_cli` works inside a host.
HOST_PATH = ":".join(
    dict.fromkeys(
        [os.path.dirname(os.path.realpath(sys.executable)), os.path.dirname(shutil.which("consul") or "/usr/local/bin")]
        + ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    )
)

SSHD_CONFIG = """\
# Foundation test lab: one sshd per network-namespace host.
ListenAddress {ip}
Port 22
HostKey /etc/ssh/ssh_host_ed25519_key
PidFile /run/sshd.pid
AuthorizedKeysFile .ssh/authorized_keys
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
MaxStartups 100:30:200
MaxSessions 50
AcceptEnv LANG LC_*
SetEnv PATH={path}
Subsystem sftp internal-sftp
LogLevel ERROR
"""

# Runs as the first process of the host's mount+UTS namespace, then becomes sshd.
HOST_INIT = """\
set -e
d={dir}
for m in {overlays}; do
  mount -t overlay overlay -o "lowerdir=$m,upperdir=$d/upper$m,workdir=$d/work$m" "$m"
done
{keep_visible}mount --rbind "$d/run" /run
mount --rbind "$d/tmp" /tmp
hostname {hostname}
exec {sshd} -D -e -f /etc/ssh/sshd_config
"""


def _source_checkout() -> str:
    """The checkout the installed foundation_cli comes from (hosts must run this code)."""
    import foundation_cli

    return os.path.dirname(os.path.dirname(os.path.realpath(foundation_cli.__file__)))


def _keep_visible_lines() -> str:
    """Mount lines that keep the checkout visible when it lies under /tmp or /run (CI clones there):
    the host's private /tmp and /run would hide it, and `python3 -m foundation_cli` would fail."""
    repo = _source_checkout()
    lines = []
    for private in ("/tmp", "/run"):
        if repo.startswith(private + "/"):
            inside = '"$d' + private + "/" + repo[len(private) + 1 :] + '"'
            lines.append(f"mkdir -p {inside}\nmount --bind {shlex.quote(repo)} {inside}\n")
    return "".join(lines)


class Host:
    """One lab host: a network namespace with its own mounts, hostname and sshd."""

    def __init__(self, lab: Lab, index: int, name: str) -> None:
        self.lab = lab
        self.index = index
        self.name = name
        self.ip = lab.slot.host_ip(index)
        self.netns = lab.slot.netns(index)
        self.veth = lab.slot.veth(index)
        self.dir = lab.dir / f"h{index}"
        self.sshd_pid: int = 0
        self._sshd: subprocess.Popen | None = None
        self._children: list[subprocess.Popen] = []

    def __repr__(self) -> str:
        return f"<Host {self.name} {self.ip} netns={self.netns}>"

    # -- running things inside ------------------------------------------------------------------
    def _nsenter(self, cwd: str) -> list[str]:
        return ["nsenter", "-t", str(self.sshd_pid), "-n", "-m", "-u", f"--wdns={cwd}", "--"]

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """A login-like environment for the host (not the test process's)."""
        env = {"PATH": HOST_PATH, "HOME": "/root", "USER": "root", "LANG": "C.UTF-8", "SHELL": "/bin/sh"}
        env.update(extra or {})
        return env

    def exec(
        self,
        cmd: str,
        check: bool = True,
        timeout: float = 30,
        *,
        env: Mapping[str, str] | None = None,
        input: str | None = None,
        cwd: str = "/root",
    ) -> subprocess.CompletedProcess:
        """Run ``sh -c CMD`` inside the host; captured text output; raise on failure when ``check``."""
        argv = self._nsenter(cwd) + ["sh", "-c", cmd]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, env=self.env(env), input=input, check=False
        )
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] {cmd!r} exited {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def popen(
        self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: str = "/root", **kw
    ) -> subprocess.Popen:
        """Start ``argv`` inside the host; killed at teardown (or when the test process dies)."""
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw.setdefault("preexec_fn", procs.die_with_parent)
        proc = subprocess.Popen(self._nsenter(cwd) + list(argv), env=self.env(env), **kw)
        self._children.append(proc)
        return proc

    def path(self, p: str) -> Path:
        """The host's private view of absolute path ``p``, readable (and writable) from outside."""
        if not p.startswith("/"):
            raise ValueError("host paths are absolute")
        return Path(f"/proc/{self.sshd_pid}/root{p}")

    def write(self, p: str, content: str | bytes, mode: int = 0o644) -> Path:
        """Write a file inside the host (creating parent directories)."""
        target = self.path(p)
        target.parent.mkdir(parents=True, exist_ok=True)
        data = content.encode("utf-8") if isinstance(content, str) else content
        target.write_bytes(data)
        os.chmod(target, mode)
        return target

    def pids(self) -> list[int]:
        """Every process in the host's network namespace."""
        return netns_pids(self.netns)

    def cmdlines(self) -> list[bytes]:
        """The command line of every process in the host (arguments joined by spaces); a process that
        exits while they are read (a shell's short-lived child) is left out, not an error."""
        out = []
        for pid in self.pids():
            try:
                out.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" "))
            except (FileNotFoundError, ProcessLookupError):
                continue
        return out

    # -- failures ---------------------------------------------------------------------------------
    def crash(self) -> list[int]:
        """SIGKILL every process in the host except its sshd (a node dying; SSH still answers)."""
        victims = [p for p in self.pids() if p != self.sshd_pid]
        procs.kill_pids(victims)
        for child in self._children:
            with contextlib.suppress(Exception):
                child.poll()
        return victims

    def partition(self) -> None:
        """Cut the host off the lab network (root-side veth down)."""
        procs.run(["ip", "link", "set", self.veth, "down"])

    def heal(self) -> None:
        """Reconnect a partitioned host."""
        procs.run(["ip", "link", "set", self.veth, "up"])

    # -- lifecycle --------------------------------------------------------------------------------
    def _prepare(self, client_pub: str, hosts_file: str) -> str:
        """Per-host upper/work dirs with its sshd config, host key and authorized key; returns its host key."""
        for m in OVERLAY_DIRS:
            for layer in ("upper", "work"):
                _mkdir_like(self.dir / layer / m.lstrip("/"), m)
        (self.dir / "run" / "sshd").mkdir(parents=True)
        os.chmod(self.dir / "run", 0o755)
        (self.dir / "tmp").mkdir()
        os.chmod(self.dir / "tmp", 0o1777)
        etc = self.dir / "upper" / "etc"
        _mkdir_like(etc / "ssh", "/etc/ssh")
        key = etc / "ssh" / "ssh_host_ed25519_key"
        procs.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{self.name}", "-f", str(key)])
        (etc / "ssh" / "sshd_config").write_text(SSHD_CONFIG.format(ip=self.ip, path=HOST_PATH))
        (etc / "hostname").write_text(self.name + "\n")
        (etc / "hosts").write_text(hosts_file)
        dot_ssh = self.dir / "upper" / "root" / ".ssh"
        dot_ssh.mkdir(mode=0o700)
        (dot_ssh / "authorized_keys").write_text(client_pub)
        return key.with_suffix(".pub").read_text().split()[:2]

    def _start(self) -> None:
        script = HOST_INIT.format(
            dir=shlex.quote(str(self.dir)),
            overlays=" ".join(OVERLAY_DIRS),
            hostname=shlex.quote(self.name),
            sshd=SSHD,
            keep_visible=_keep_visible_lines(),
        )
        log = open(self.dir / "sshd.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self._sshd = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "unshare", "--mount", "--uts", "--propagation", "private"]
                + ["sh", "-c", script],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=procs.die_with_parent,
                env={"PATH": HOST_PATH, "LANG": "C.UTF-8"},
            )
        finally:
            log.close()
        # `ip netns exec`, `unshare` and `sh` all exec: the Popen pid becomes sshd.
        self.sshd_pid = self._sshd.pid

    def _wait_ready(self, deadline: float) -> None:
        while True:
            if self._sshd is not None and self._sshd.poll() is not None:
                log = (self.dir / "sshd.log").read_text(errors="replace").strip()
                raise RuntimeError(f"sshd on lab host {self.name} exited ({self._sshd.returncode}): {log[-1500:]}")
            try:
                with socket.create_connection((self.ip, 22), timeout=0.5) as sock:
                    sock.settimeout(2)
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"sshd on lab host {self.name} ({self.ip}) did not answer in time")
            time.sleep(0.02)

    def _stop(self) -> None:
        procs.kill_pids(self.pids())
        for child in self._children + ([self._sshd] if self._sshd else []):
            procs.stop_process(child, timeout=2)


class Lab:
    """N hosts on one bridge in a claimed slot; :meth:`close` removes everything it made."""

    def __init__(self, n: int = 3, *, same_hostname: bool = False, name_prefix: str = "node") -> None:
        if n < 1:
            raise ValueError("a lab needs at least one host")
        self.closed = False
        self.slot: Slot = claim()
        procs.register(self)
        try:
            self.dir = self.slot.dir
            self.dir.mkdir(parents=True, exist_ok=False)
            self.bridge = self.slot.bridge
            self.bridge_ip = self.slot.bridge_ip
            self.prefix_len = 28
            names = [name_prefix if same_hostname else f"{name_prefix}{i + 1}" for i in range(n)]
            self.hosts = [Host(self, i, names[i]) for i in range(n)]
            self.ssh_key = str(self.dir / "id_ed25519")
            self.known_hosts = str(self.dir / "known_hosts")
            self._build(same_hostname)
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"<Lab slot={self.slot.index} bridge={self.bridge} hosts={[h.name for h in self.hosts]}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def subnet(self) -> str:
        return f"{self.bridge_ip.rsplit('.', 1)[0]}.{int(self.bridge_ip.rsplit('.', 1)[1]) - 1}/{self.prefix_len}"

    def _build(self, same_hostname: bool) -> None:
        ip = procs.run
        ip(["ip", "link", "add", self.bridge, "type", "bridge", "stp_state", "0", "mcast_snooping", "0"])
        ip(["ip", "addr", "add", f"{self.bridge_ip}/{self.prefix_len}", "dev", self.bridge])
        ip(["ip", "link", "set", self.bridge, "up"])
        for h in self.hosts:
            peer = self.slot.peer(h.index)
            ip(["ip", "netns", "add", h.netns])
            ip(["ip", "link", "add", h.veth, "type", "veth", "peer", "name", peer])
            ip(["ip", "link", "set", h.veth, "master", self.bridge, "up"])
            ip(["ip", "link", "set", peer, "netns", h.netns])
            ip(["ip", "-n", h.netns, "link", "set", peer, "name", "eth0"])
            ip(["ip", "-n", h.netns, "addr", "add", f"{h.ip}/{self.prefix_len}", "dev", "eth0"])
            ip(["ip", "-n", h.netns, "link", "set", "eth0", "up"])
            ip(["ip", "-n", h.netns, "link", "set", "lo", "up"])
            ip(["ip", "-n", h.netns, "route", "add", "default", "via", self.bridge_ip])
        procs.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "foundation-lab", "-f", self.ssh_key])
        client_pub = Path(self.ssh_key + ".pub").read_text()
        hosts_file = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        if not same_hostname:
            hosts_file += "".join(f"{h.ip}\t{h.name}\n" for h in self.hosts)
        known = []
        for h in self.hosts:
            own = hosts_file if not same_hostname else hosts_file + f"{h.ip}\t{h.name}\n"
            keytype, key = h._prepare(client_pub, own)
            known.append(f"{h.ip} {keytype} {key}\n")
        Path(self.known_hosts).write_text("".join(known))
        for h in self.hosts:
            h._start()
        deadline = time.monotonic() + 20
        for h in self.hosts:
            h._wait_ready(deadline)

    # -- conveniences -----------------------------------------------------------------------------
    def ssh_argv(self, host: Host, command: str | None = None) -> list[str]:
        """An ``ssh`` command line for root@host using the lab key and the pinned host keys."""
        argv = [
            "ssh",
            "-i",
            self.ssh_key,
            "-o",
            f"UserKnownHostsFile={self.known_hosts}",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "ConnectTimeout=5",
            f"root@{host.ip}",
        ]
        return argv + ([command] if command is not None else [])

    def ssh_client(self, host: Host, *, timeout: float = 10):
        """A connected paramiko client (host key checked against the pinned known_hosts)."""
        import paramiko

        client = paramiko.SSHClient()
        client.load_host_keys(self.known_hosts)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            host.ip,
            username="root",
            key_filename=self.ssh_key,
            timeout=timeout,
            allow_agent=False,
            look_for_keys=False,
        )
        return client

    def close(self) -> None:
        """Kill everything in the hosts, delete namespaces, veths, bridge and files; release the slot."""
        if self.closed:
            return
        self.closed = True
        try:
            for h in getattr(self, "hosts", []):
                with contextlib.suppress(Exception):
                    h._stop()
            clean_slot(self.slot.index)
        finally:
            self.slot.release()
            procs.unregister(self)


def _mkdir_like(path: Path, like: str) -> None:
    """Create ``path`` (and parents) with the mode and owner of the real directory ``like``."""
    path.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(OSError):
        st = os.stat(like)
        os.chmod(path, stat.S_IMODE(st.st_mode))
        os.chown(path, st.st_uid, st.st_gid)
