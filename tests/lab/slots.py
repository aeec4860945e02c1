"""Lab slots: several test runs share this machine, so every lab gets its own /28 and names.

198.18.0.0/24 is cut into 16 slots of /28. Slot ``k`` owns the bridge
``flb<k>`` (198.18.0.(16k+1)), hosts from 198.18.0.(16k+2) (up to 13 of them),
network namespaces ``fl<k>n<i>``, root-side veths ``fl<k>v<i>`` (peers
``fl<k>p<i>`` until they move into their namespace), and the directory
``/tmp/foundation-lab/s<k>``. Every name fits IFNAMSIZ (15).

A slot is claimed with ``flock`` on ``/run/foundation-lab/slot-<k>.lock`` (the
owner's pid is written inside for humans). A killed owner releases its lock
with its death, so whoever takes the slot next finds the leftovers and removes
them: processes in the namespaces, the namespaces, the root-side veths
(explicitly: a deleted namespace's veth pair can linger), the bridge, and the
directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from tests.lab.procs import kill_pids, run

RUN_DIR = Path("/run/foundation-lab")
BASE_DIR = Path("/tmp/foundation-lab")
NETWORK = ipaddress.ip_network("198.18.0.0/24")
SLOT_PREFIX = 28
SLOTS = 16
MAX_HOSTS = 13


@dataclass
class Slot:
    """A claimed slot: hold it (the open, locked file) for the lab's lifetime."""

    index: int
    fd: int

    @property
    def bridge(self) -> str:
        return f"flb{self.index}"

    @property
    def bridge_ip(self) -> str:
        return str(NETWORK.network_address + 16 * self.index + 1)

    def host_ip(self, i: int) -> str:
        """Address of host ``i`` (0-based)."""
        if not 0 <= i < MAX_HOSTS:
            raise ValueError(f"a lab holds at most {MAX_HOSTS} hosts")
        return str(NETWORK.network_address + 16 * self.index + 2 + i)

    def netns(self, i: int) -> str:
        return f"fl{self.index}n{i}"

    def veth(self, i: int) -> str:
        return f"fl{self.index}v{i}"

    def peer(self, i: int) -> str:
        return f"fl{self.index}p{i}"

    @property
    def dir(self) -> Path:
        return BASE_DIR / f"s{self.index}"

    def release(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = -1


def _try_lock(index: int) -> int | None:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    fd = os.open(RUN_DIR / f"slot-{index}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _slot_netns(index: int, listing: str | None = None) -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout if listing is None else listing
    pattern = re.compile(rf"^fl{index}n\d+$")
    return [line.split()[0] for line in out.splitlines() if line.strip() and pattern.match(line.split()[0])]


def _slot_links(index: int, listing: str | None = None) -> list[str]:
    out = run(["ip", "-o", "link", "show"], check=False).stdout if listing is None else listing
    names = []
    pattern = re.compile(rf"^(fl{index}[vp]\d+|flb{index})$")
    for line in out.splitlines():
        try:
            name = line.split(":", 2)[1].strip().split("@", 1)[0]
        except IndexError:
            continue
        if pattern.match(name):
            names.append(name)
    # Veths before the bridge they are attached to.
    return sorted(names, key=lambda n: n.startswith("flb"))


def netns_pids(name: str) -> list[int]:
    """Processes whose network namespace is ``name``."""
    out = run(["ip", "netns", "pids", name], check=False).stdout
    return [int(p) for p in out.split() if p.isdigit()]


def clean_slot(index: int) -> list[str]:
    """Remove every trace of slot ``index``; returns what was removed (caller holds the lock)."""
    removed: list[str] = kill_stray_nspawn(index)
    for ns in _slot_netns(index):
        pids = netns_pids(ns)
        if pids:
            kill_pids(pids)
            removed.append(f"{len(pids)} processes in {ns}")
        run(["ip", "netns", "del", ns], check=False)
        removed.append(f"netns {ns}")
    for link in _slot_links(index):
        run(["ip", "link", "del", link], check=False)
        removed.append(f"link {link}")
    slot_dir = BASE_DIR / f"s{index}"
    if slot_dir.exists():
        _unmount_under(slot_dir)
        shutil.rmtree(slot_dir, ignore_errors=True)
        removed.append(f"dir {slot_dir}")
    return removed


def kill_stray_nspawn(index: int) -> list[str]:
    """Kill ``systemd-nspawn -M fl<index>c<i>`` (foreign hosts, tests/lab/nspawn.py) left by a killed run."""
    killed = []
    prefix = f"fl{index}c"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv[0].endswith(b"systemd-nspawn") or b"-M" not in argv:
            continue
        at = argv.index(b"-M") + 1
        machine = argv[at].decode(errors="replace") if at < len(argv) else ""
        if machine.startswith(prefix) and machine[len(prefix) :].isdigit():
            kill_pids([int(entry.name)])
            killed.append(f"nspawn {machine}")
    return killed


def _unmount_under(path: Path) -> None:
    """Lazily unmount anything still mounted under ``path`` in this (root) mount namespace."""
    prefix = str(path).rstrip("/") + "/"
    try:
        with open("/proc/self/mounts", encoding="utf-8") as fh:
            points = [line.split()[1] for line in fh]
    except OSError:
        return
    for point in sorted((p for p in points if p.startswith(prefix) or p == str(path)), reverse=True):
        run(["umount", "-l", point], check=False)


def _has_leftovers(index: int, netns_listing: str, link_listing: str) -> bool:
    return bool(
        _slot_netns(index, netns_listing) or _slot_links(index, link_listing) or (BASE_DIR / f"s{index}").exists()
    )


def _address_in_use(ip: str) -> bool:
    out = run(["ip", "-o", "addr", "show"], check=False).stdout
    return f" {ip}/" in out


def claim(*, exclude: set[int] | None = None) -> Slot:
    """Claim a free slot, cleaning every stale slot found on the way."""
    chosen: Slot | None = None
    netns_listing = run(["ip", "netns", "list"], check=False).stdout
    link_listing = run(["ip", "-o", "link", "show"], check=False).stdout
    for index in range(SLOTS):
        if exclude and index in exclude:
            continue
        fd = _try_lock(index)
        if fd is None:
            continue
        if _has_leftovers(index, netns_listing, link_listing):
            clean_slot(index)
        slot = Slot(index, fd)
        if chosen is None and not _address_in_use(slot.bridge_ip):
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            chosen = slot
        else:
            slot.release()
    if chosen is None:
        raise RuntimeError(
            f"all {SLOTS} lab slots are busy (see {RUN_DIR}); a stale one is cleaned when its owner dies"
        )
    return chosen


def cleanup_stale() -> list[str]:
    """Clean every slot whose owner is gone (``python -m tests.lab cleanup``)."""
    removed: list[str] = []
    for index in range(SLOTS):
        fd = _try_lock(index)
        if fd is None:
            continue
        try:
            removed += clean_slot(index)
        finally:
            Slot(index, fd).release()
    return removed
