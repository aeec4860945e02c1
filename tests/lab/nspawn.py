"""Foreign hosts for the lab: Debian roots booted with ``systemd-nspawn``, systemd as PID 1.

A namespace host (:mod:`tests.lab.netns`) shares the machine's /usr, Python and init; these do not.
Each is a Debian root built once by ``scripts/build-lab-roots.sh`` (debootstrap; cached under
``/var/cache/foundation-lab/roots/<suite>-<arch>``, outside the checkout) and booted with

    systemd-nspawn --register=no --keep-unit --boot \
        --network-bridge=<the lab slot's bridge> -M fl<slot>c<i> -D MERGED

where MERGED is an overlay mounted here (lower: the cached root, upper: a per-host directory in the
lab slot): the cached root stays pristine, and the host keeps its files across a reboot
(:meth:`ForeignHost.restart`) or a crash (:meth:`ForeignHost.crash`, then :meth:`ForeignHost.start`),
like a real machine (``--volatile=overlay`` would throw them away at every shutdown).
The container's ``host0`` gets the next free address of the lab slot (``nsenter -t <its init> -n``).
The lab's client key is bound read-only over ``/root/.ssh/authorized_keys`` and the two login users'
(``labpw``: sudo asks for :data:`SUDO_PASSWORD`; ``labnopw``: NOPASSWD); a per-host sshd drop-in
(port, who may log in) is bound over ``/etc/ssh/sshd_config.d/lab.conf``.

Shutdown: ``systemctl poweroff`` inside, then SIGTERM to ``systemd-nspawn``, SIGKILL after a
grace; the lab's slot cleanup (:func:`tests.lab.slots.clean_slot`) also kills stray
``systemd-nspawn -M fl<slot>c…`` processes of a killed run and unmounts the roots. arm64 roots run under qemu-user (binfmt_misc): slow, budget for it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.lab import procs
from tests.lab.netns import Lab

ROOTS = Path(os.environ.get("FOUNDATION_LAB_ROOTS", "/var/cache/foundation-lab/roots"))
REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "scripts" / "build-lab-roots.sh"
SUDO_PASSWORD = os.environ.get("FOUNDATION_LAB_SUDO_PASSWORD", "lab-sudo-pw")
SUDO_USER = "labpw"
NOPASSWD_USER = "labnopw"


def ensure_root(spec: str, *, timeout: float = 900) -> Path:
    """The cached root ``<suite>-<arch>`` (e.g. ``bullseye-arm64``), built now when missing."""
    root = ROOTS / spec
    foreign_arch = spec.rsplit("-", 1)[1] != "amd64"  # the script also (re)registers binfmt_misc for it
    if foreign_arch or not (root / ".foundation-lab-root").is_file():
        proc = subprocess.run([str(BUILD_SCRIPT), spec], capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"building lab root {spec} failed: {(proc.stderr or proc.stdout).strip()[-1500:]}")
    return root


def nspawn_available() -> str | None:
    """Why foreign hosts cannot run here, or None."""
    if os.geteuid() != 0:
        return "foreign lab hosts need root"
    for tool in ("systemd-nspawn", "debootstrap"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            return f"{tool} missing: run scripts/install-test-deps.sh"
    return None


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children", encoding="ascii") as fh:
            return [int(p) for p in fh.read().split()]
    except OSError:
        return []


def _container_init(nspawn_pid: int) -> int | None:
    """The container's PID 1 (seen from here): a descendant of nspawn whose innermost pid is 1."""
    todo = _children(nspawn_pid)
    while todo:
        pid = todo.pop(0)
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:") and line.split()[-1] == "1" and len(line.split()) > 2:
                return pid
        todo += _children(pid)
    return None


class ForeignHost:
    """One booted Debian root on the lab bridge (see the module doc)."""

    def __init__(
        self,
        lab: Lab,
        index: int,
        spec: str,
        *,
        name: str | None = None,
        ssh_port: int = 22,
        sshd_extra: str = "",
        authorized_keys: str | None = None,
        binds: tuple[str, ...] = (),
    ) -> None:
        self.lab = lab
        self.index = index
        self.spec = spec
        self.suite, self.arch = spec.rsplit("-", 1)
        self.name = name or f"{self.suite}-{self.arch}"
        self.machine = f"fl{lab.slot.index}c{index}"
        self.ip = lab.slot.host_ip(index)
        self.ssh_port = ssh_port
        self.sshd_extra = sshd_extra
        self.authorized_keys = authorized_keys  # default: the lab's client key
        self.binds = binds  # machine directories bound read-write at the same path (e.g. a shared witness dir)
        self.dir = lab.dir / f"c{index}"
        self.root: Path = ROOTS / spec
        self.proc: subprocess.Popen | None = None
        self.init_pid = 0
        self.boot_seconds = 0.0

    def __repr__(self) -> str:
        return f"<ForeignHost {self.name} {self.ip}:{self.ssh_port} {self.machine}>"

    # -- files bound into the container ---------------------------------------------------------
    def _prepare(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "hostname").write_text(self.name + "\n")
        (self.dir / "hosts").write_text(
            f"127.0.0.1\tlocalhost\n127.0.1.1\t{self.name}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
        )
        keys = self.dir / "authorized_keys"
        keys.write_text(self.authorized_keys or Path(self.lab.ssh_key + ".pub").read_text())
        os.chmod(keys, 0o644)
        conf = self.dir / "sshd-lab.conf"
        conf.write_text(
            f"Port {self.ssh_port}\nUseDNS no\nPasswordAuthentication no\nMaxStartups 100:30:200\n"
            f"MaxSessions 50\nLogLevel ERROR\n{self.sshd_extra}"
        )
        os.chmod(conf, 0o644)

    def known_hosts_line(self) -> str:
        keytype, key = (self.root / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()[:2]
        where = self.ip if self.ssh_port == 22 else f"[{self.ip}]:{self.ssh_port}"
        return f"{where} {keytype} {key}\n"

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self, *, timeout: float = 120) -> ForeignHost:
        self.root = ensure_root(self.spec)
        self._prepare()
        keys = str(self.dir / "authorized_keys")
        argv = [
            "systemd-nspawn", "--quiet", "--register=no", "--keep-unit", "--boot",
            f"--network-bridge={self.lab.bridge}", "-M", self.machine, "-D", str(self._mount_root()),
            f"--bind-ro={keys}:/root/.ssh/authorized_keys",
            f"--bind-ro={keys}:/home/{SUDO_USER}/.ssh/authorized_keys",
            f"--bind-ro={keys}:/home/{NOPASSWD_USER}/.ssh/authorized_keys",
            f"--bind-ro={self.dir / 'sshd-lab.conf'}:/etc/ssh/sshd_config.d/lab.conf",
            f"--bind-ro={self.dir / 'hostname'}:/etc/hostname",
            f"--bind-ro={self.dir / 'hosts'}:/etc/hosts",
            *(f"--bind={b}:{b}" for b in self.binds),
        ]  # fmt: skip
        started = time.monotonic()
        log = open(self.dir / "console.log", "ab")  # noqa: SIM115 - handed to the child
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, preexec_fn=procs.die_with_parent,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "SYSTEMD_LOG_LEVEL": "warning"},
            )  # fmt: skip
        finally:
            log.close()
        deadline = started + timeout
        while not self.init_pid:
            self._check_alive()
            self.init_pid = _container_init(self.proc.pid) or 0
            if not self.init_pid:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.name}: container init did not appear")
                time.sleep(0.05)
        # host0 appears once nspawn moved it in; give it the slot's next address.
        while True:
            self._check_alive()
            if self._netns(["ip", "link", "show", "host0"], check=False).returncode == 0:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no host0 in the container")
            time.sleep(0.05)
        self._netns(["ip", "addr", "add", f"{self.ip}/{self.lab.prefix_len}", "dev", "host0"])
        self._netns(["ip", "link", "set", "host0", "up"])
        self._netns(["ip", "link", "set", "lo", "up"], check=False)
        self._netns(["ip", "route", "replace", "default", "via", self.lab.bridge_ip])
        self._wait_ssh(deadline)
        self.boot_seconds = time.monotonic() - started
        return self

    @property
    def merged(self) -> Path:
        return self.dir / "merged"

    def _mount_root(self) -> Path:
        """The overlay (cached root + this host's upper dir) the container boots from; mounted once."""
        merged = self.merged
        if os.path.ismount(merged):
            return merged
        for sub in ("upper", "work", "merged"):
            (self.dir / sub).mkdir(exist_ok=True)
        procs.run(
            ["mount", "-t", "overlay", "overlay", "-o",
             f"lowerdir={self.root},upperdir={self.dir / 'upper'},workdir={self.dir / 'work'}", str(merged)]
        )  # fmt: skip
        return merged

    def path(self, p: str) -> Path:
        """The host's file ``p`` as seen from outside (its root file system, running or not)."""
        return self.merged / p.lstrip("/")

    def unmount(self) -> None:
        if os.path.ismount(self.merged):
            procs.run(["umount", "-l", str(self.merged)], check=False)

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            log = (self.dir / "console.log").read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{self.name}: systemd-nspawn exited ({self.proc.returncode}): {log}")

    def _netns(self, argv: list[str], *, check: bool = True) -> subprocess.CompletedProcess:
        return procs.run(["nsenter", "-t", str(self.init_pid), "-n", "--"] + argv, check=check)

    def _wait_ssh(self, deadline: float) -> None:
        while True:
            self._check_alive()
            try:
                with socket.create_connection((self.ip, self.ssh_port), timeout=1) as sock:
                    sock.settimeout(5)
                    if sock.recv(4).startswith(b"SSH-"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: sshd did not answer on {self.ip}:{self.ssh_port}")
            time.sleep(0.2)

    def stop(self, *, grace: float = 10) -> None:
        """Power the container off (``systemctl poweroff``, then SIGTERM to nspawn), SIGKILL after a grace.

        SIGTERM alone makes nspawn send SIGRTMIN+3 to the container's systemd, which an arm64 container
        under qemu-user never sees (qemu keeps some real-time signals for itself): poweroff first.
        """
        proc, init = self.proc, self.init_pid
        if proc is None or proc.poll() is not None:
            self.proc, self.init_pid = None, 0
            return
        if init:
            with contextlib.suppress(Exception):
                self.exec("systemctl poweroff --no-block", check=False, timeout=10)
        for sig in (None, signal.SIGTERM):
            if sig is not None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
            try:
                proc.wait(timeout=grace / 2)
                break
            except subprocess.TimeoutExpired:
                continue
        else:
            procs.stop_process(proc, timeout=10)
        self.proc, self.init_pid = None, 0

    def close(self) -> None:
        """Power off and unmount the host's root (its upper dir goes with the lab slot's directory)."""
        self.stop()
        self.unmount()

    def crash(self) -> None:
        """The machine dies at once (SIGKILL to nspawn and everything in the container)."""
        proc, self.proc = self.proc, None
        init, self.init_pid = self.init_pid, 0
        victims = [init] if init else []
        if proc is not None:
            victims.append(proc.pid)
        procs.kill_pids(victims)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)

    def restart(self) -> ForeignHost:
        """Reboot: power off and boot again (``--volatile=overlay``: files written since boot are lost)."""
        self.stop()
        return self.start()

    # -- inside ---------------------------------------------------------------------------------
    def exec(self, cmd: str, *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """``sh -c CMD`` as root inside the container (all its namespaces)."""
        if not self.init_pid:
            raise RuntimeError(f"{self.name} is not running")
        argv = ["nsenter", "-t", str(self.init_pid), "-m", "-u", "-i", "-n", "-p", "--", "/bin/sh", "-c", cmd]
        proc = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout, check=False,
            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8",
                 "HOME": "/root"},
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise RuntimeError(
                f"[{self.name}] {cmd!r} exited {proc.returncode}: {(proc.stderr or proc.stdout)[-1500:]}"
            )
        return proc


def add_known_hosts(lab: Lab, hosts: list[ForeignHost]) -> None:
    with open(lab.known_hosts, "a", encoding="ascii") as fh:
        for h in hosts:
            fh.write(h.known_hosts_line())
