"""The node-agent bundle: this package and its runtime deps as one tarball, so hosts need no internet.

Built from what is installed here (a ``pip install --target``-shaped tree of
the installed distributions), cached under ``$XDG_CACHE_HOME/foundation``, and
unpacked on a host under ``<install_root>/agent/lib``; the agent runs as
``python3 -m foundation_cli agent run`` with ``PYTHONPATH`` pointing there.
It is exact when the host's Python major.minor and architecture match this
machine's (the fast path); compiled deps may not load otherwise.
The SSH stack (paramiko, cryptography, …) is left out: the agent never uses SSH.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as md
import io
import os
import platform
import re
import sys
import tarfile
from dataclasses import dataclass
from pathlib import Path

import foundation_cli

EXCLUDE = {"paramiko", "bcrypt", "cryptography", "cffi", "pycparser", "invoke", "pynacl", "foundation-cli"}


@dataclass
class Bundle:
    path: Path
    sha256: str
    python: str  # "3.11"
    arch: str  # "x86_64"
    size: int


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _deps(root: str = "foundation-cli") -> list[md.Distribution]:
    """Installed runtime dependencies of ``root`` (recursively, markers evaluated here)."""
    seen: dict[str, md.Distribution] = {}

    def walk(name: str) -> None:
        key = _norm(name)
        if key in seen:
            return
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            return
        seen[key] = dist
        for req in dist.requires or []:
            spec, _, marker = req.partition(";")
            if marker and not _marker_ok(marker):
                continue
            walk(re.split(r"[ <>=!~\[(]", spec.strip(), maxsplit=1)[0])

    walk(root)
    return [d for k, d in sorted(seen.items()) if k not in EXCLUDE]


def _marker_ok(marker: str) -> bool:
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate({"extra": ""})
    except Exception:  # noqa: BLE001 - no packaging, or an odd marker: skip extras, keep the rest
        return "extra" not in marker


def _files() -> list[tuple[str, Path]]:
    """(archive name, local path) for the package and every dependency file."""
    out: list[tuple[str, Path]] = []
    pkg_dir = Path(foundation_cli.__file__).parent
    for path in sorted(pkg_dir.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and not path.name.endswith(".pyc"):
            out.append((str(Path("foundation_cli") / path.relative_to(pkg_dir)), path))
    for dist in _deps():
        for f in dist.files or []:
            if "__pycache__" in f.parts or str(f).endswith(".pyc") or str(f).startswith(".."):
                continue
            local = Path(dist.locate_file(f))
            if local.is_file():
                out.append((str(f), local))
    return out


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "foundation"


def build() -> Bundle:
    """The bundle for this machine's Python (cached; rebuilt when the package or a dep changes).

    ``FOUNDATION_AGENT_BUNDLE=path.tar.gz`` uses a prebuilt bundle instead (another Python or
    architecture than this machine's, or a pinned release).
    """
    explicit = os.environ.get("FOUNDATION_AGENT_BUNDLE")
    if explicit:
        try:
            data = Path(explicit).read_bytes()
        except OSError as exc:
            from foundation_cli.errors import UsageError

            raise UsageError(f"FOUNDATION_AGENT_BUNDLE: cannot read {explicit}: {exc.strerror}") from None
        m = re.search(r"agent-(\d+\.\d+)-([A-Za-z0-9_]+)-", Path(explicit).name)
        py, arch = (m.group(1), m.group(2)) if m else (python_tag(), platform.machine())
        return Bundle(Path(explicit), hashlib.sha256(data).hexdigest(), py, arch, len(data))
    files = _files()
    key = hashlib.sha256()
    key.update(f"{python_tag()} {platform.machine()}\n".encode())
    pkg_dir = Path(foundation_cli.__file__).parent
    for name, path in files:
        st = path.stat()
        if path.is_relative_to(pkg_dir):  # our own source changes often: hash its content, not its mtime
            key.update(name.encode() + b" " + hashlib.sha256(path.read_bytes()).digest() + b"\n")
        else:
            key.update(f"{name} {st.st_size} {int(st.st_mtime)}\n".encode())
    tag = key.hexdigest()[:16]
    target = cache_dir() / f"agent-{python_tag()}-{platform.machine()}-{tag}.tar.gz"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        import gzip

        with (
            gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=1, mtime=0) as gz,
            tarfile.open(fileobj=gz, mode="w") as tar,
        ):
            for name, path in files:
                info = tar.gettarinfo(str(path), arcname=name)
                info.uid = info.gid = 0
                info.uname = info.gname = "root"
                info.mtime = 0
                with open(path, "rb") as fh:
                    tar.addfile(info, fh)
        tmp = target.with_suffix(".tmp")
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, target)
        for old in target.parent.glob(f"agent-{python_tag()}-{platform.machine()}-*.tar.gz"):
            if old != target:
                old.unlink(missing_ok=True)
    data = target.read_bytes()
    return Bundle(
        path=target,
        sha256=hashlib.sha256(data).hexdigest(),
        python=python_tag(),
        arch=platform.machine(),
        size=len(data),
    )
