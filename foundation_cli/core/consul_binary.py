"""A consul binary for the host's architecture, checked by its ELF header before it is uploaded.

Hosts without a recent enough consul get one from the operator's machine. Which one, for a host
whose ``uname -m`` is ``arch``:

1. ``consul_binary: {amd64: PATH, arm64: PATH}`` in foundation.yaml: the entry for that
   architecture (a single ``consul_binary: PATH`` / ``--consul-binary`` is used when it fits);
2. the operator's own consul (on PATH) when it is built for that architecture;
3. Debian bullseye's ``consul`` package for that architecture (Consul 1.8.7, the one the project
   is tested with), fetched once with a private apt state, exactly like scripts/install-consul.sh
   (``apt-get -o APT::Architecture=ARCH … download consul:ARCH``, then ``dpkg -x``), and cached in
   ``$XDG_CACHE_HOME/foundation/consul/<debian-arch>/consul``.

Whatever is chosen must be an ELF executable whose ``e_machine`` is the host's: otherwise the host
is refused before anything is uploaded, naming what was found. (An emulated arm64 host may even
*run* a static x86-64 binary through the kernel, and a dynamic one fails only with "No such file or
directory": the header is the check, not whether it happens to fail.)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import struct
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from foundation_cli.errors import FoundationError

# uname -m → Debian architecture, ELF e_machine, ELF class (1 = 32-bit, 2 = 64-bit)
ARCHES: dict[str, tuple[str, int, int]] = {
    "x86_64": ("amd64", 62, 2),
    "aarch64": ("arm64", 183, 2),
    "arm64": ("arm64", 183, 2),
    "armv7l": ("armhf", 40, 1),
    "armv6l": ("armel", 40, 1),
    "i686": ("i386", 3, 1),
    "i386": ("i386", 3, 1),
}
MACHINES = {62: "x86-64", 183: "aarch64", 40: "arm", 3: "i386", 243: "riscv", 8: "mips", 21: "ppc64"}
DEBIAN_ARCHIVE = "http://deb.debian.org/debian"
DEBIAN_SUITE = "bullseye"


def debian_arch(arch: str) -> str:
    """``uname -m`` (or a Debian architecture name) → Debian's name for it."""
    if arch in ARCHES:
        return ARCHES[arch][0]
    return arch


def elf_machine(head: bytes) -> tuple[int, int] | None:
    """(ELF class, e_machine) from the first 20 bytes of a file, or None when it is not ELF."""
    if len(head) < 20 or head[:4] != b"\x7fELF":
        return None
    endian = "<" if head[5] == 1 else ">"
    return head[4], struct.unpack(endian + "H", head[18:20])[0]


def describe(head: bytes) -> str:
    info = elf_machine(head)
    if info is None:
        return "not an ELF executable"
    cls, machine = info
    return f"ELF {32 if cls == 1 else 64}-bit {MACHINES.get(machine, f'machine {machine}')}"


def fits(head: bytes, arch: str) -> bool:
    """Whether an ELF file with header ``head`` runs natively on a host whose ``uname -m`` is ``arch``."""
    want = ARCHES.get(arch)
    info = elf_machine(head)
    return bool(want and info and info == (want[2], want[1]))


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "foundation" / "consul"


def fetch_debian(arch: str, *, timeout: float = 300) -> Path:
    """Debian bullseye's consul for ``arch`` (downloaded once, cached); raises when that fails."""
    deb_arch = debian_arch(arch)
    dest = cache_dir() / deb_arch
    binary = dest / "consul"
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if binary.is_file():
            return binary
        if not shutil.which("apt-get") or not shutil.which("dpkg"):
            raise FoundationError(
                f"no consul for {arch} here and no apt-get/dpkg to fetch Debian's",
                hint=f"name one in foundation.yaml: consul_binary: {{{deb_arch}: /path/to/consul}}",
            )
        with tempfile.TemporaryDirectory(prefix="foundation-consul-") as tmp:
            work = Path(tmp)
            for sub in ("lists/partial", "cache/archives/partial", "etc"):
                (work / sub).mkdir(parents=True)
            keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
            signed = f"signed-by={keyring} " if os.access(keyring, os.R_OK) else ""
            (work / "etc" / "sources.list").write_text(
                f"deb [{signed}arch={deb_arch}] {DEBIAN_ARCHIVE} {DEBIAN_SUITE} main\n"
            )
            opts = [
                f"-o=Dir::Etc::SourceList={work / 'etc' / 'sources.list'}",
                "-o=Dir::Etc::SourceParts=/dev/null",
                f"-o=Dir::State::Lists={work / 'lists'}",
                f"-o=Dir::Cache={work / 'cache'}",
                "-o=APT::Get::List-Cleanup=0",
                "-o=Debug::NoLocking=1",
                f"-o=APT::Architecture={deb_arch}",
                "-o=APT::Architectures=" + deb_arch,
            ]
            if os.geteuid() == 0:
                opts.append("-o=APT::Sandbox::User=root")
            steps = [
                ["apt-get", *opts, "-qq", "update"],
                ["apt-get", *opts, "-qq", "download", f"consul:{deb_arch}"],
            ]
            for argv in steps:
                proc = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=timeout, check=False)
                if proc.returncode != 0:
                    last = (proc.stderr or proc.stdout).strip().splitlines()
                    raise FoundationError(
                        f"cannot fetch Debian's consul for {deb_arch}: {last[-1] if last else 'apt-get failed'}",
                        hint=f"name one in foundation.yaml: consul_binary: {{{deb_arch}: /path/to/consul}}",
                    )
            debs = sorted(work.glob("consul_*.deb"))
            if not debs:
                raise FoundationError(f"Debian's consul package for {deb_arch} was not downloaded")
            subprocess.run(["dpkg", "-x", str(debs[0]), str(work / "root")], check=True, timeout=timeout)
            tmp_bin = dest / f"consul.{os.getpid()}.tmp"
            shutil.copyfile(work / "root" / "usr" / "bin" / "consul", tmp_bin)
            os.chmod(tmp_bin, 0o755)
            os.replace(tmp_bin, binary)
    return binary


def _read(path: str) -> bytes:
    try:
        return Path(os.path.expanduser(path)).read_bytes()
    except OSError as exc:
        raise FoundationError(f"consul binary {path}: {exc.strerror}") from None


def for_arch(
    arch: str,
    *,
    local: Callable[[], bytes | None],
    per_arch: dict[str, str] | None = None,
    alias: str = "",
    fetch: Callable[[str], Path] = fetch_debian,
) -> bytes:
    """The consul binary to upload to a host whose ``uname -m`` is ``arch`` (see the module doc)."""
    where = f"{alias}: " if alias else ""
    deb_arch = debian_arch(arch)
    if arch not in ARCHES:
        raise FoundationError(
            f"{where}unsupported architecture {arch or '?'} (no consul build known for it)",
            hint="install consul ≥ 1.8 on the host yourself; `up` then uses it",
        )
    per_arch = {debian_arch(k): v for k, v in (per_arch or {}).items()}
    if deb_arch in per_arch:
        data = _read(per_arch[deb_arch])
        if not fits(data[:20], arch):
            raise FoundationError(
                f"{where}consul_binary.{deb_arch} ({per_arch[deb_arch]}) is {describe(data[:20])}, the host is {arch}",
                hint=f"point consul_binary.{deb_arch} at a consul built for {arch}",
            )
        return data
    data = local()
    if data is not None and fits(data[:20], arch):
        return data
    found = describe(data[:20]) if data is not None else "none"
    try:
        path = fetch(arch)
    except FoundationError as exc:
        raise FoundationError(
            f"{where}no consul for {arch}: the local one is {found}, and {exc.message}",
            hint=exc.hint,
        ) from None
    data = path.read_bytes()
    if not fits(data[:20], arch):
        with contextlib.suppress(OSError):
            path.unlink()
        raise FoundationError(f"{where}the fetched consul for {deb_arch} is {describe(data[:20])}, the host is {arch}")
    return data
