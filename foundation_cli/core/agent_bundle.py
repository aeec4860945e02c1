"""The node-agent bundle: this package and its runtime deps as one tarball, so hosts need no internet.

Unpacked on a host under ``<install_root>/agent/lib``; the agent runs as
``python3 -m foundation_cli.agent`` (argparse, no Typer/click) with ``PYTHONPATH`` pointing there.
A bundle is made for one (Python major.minor, architecture) — the host's, from its probe:

- the host's Python and architecture are this machine's (:func:`build`, the fast path): the
  installed distributions, as they are here (compiled modules included: they load there too);
- anything else (:func:`for_target`, e.g. Debian 11's Python 3.9 on arm64): this package's source
  plus the agent's dependencies (:data:`AGENT_REQUIREMENTS`) as wheels *for the target*, fetched
  once with ``pip download --only-binary=:all: --python-version X.Y --platform …`` and cached in
  ``$XDG_CACHE_HOME/foundation/wheels/<X.Y>-<arch>``, or taken from an operator-provided wheelhouse
  (``agent.wheelhouse`` in foundation.yaml: ``pip download --no-index --find-links``, for
  air-gapped sites). Compiled speed-ups are dropped wherever the wheel carries the pure-Python
  module beside them (zeroconf does): the agent never needs a compiled module to start.

The SSH stack (paramiko, cryptography, …) and the CLI's (typer, click, rich) are left out of
target bundles: the agent uses neither.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata as md
import io
import os
import platform
import re
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import foundation_cli

EXCLUDE = {"paramiko", "bcrypt", "cryptography", "cffi", "pycparser", "invoke", "pynacl", "foundation-cli"}
# The CLI's own stack (and PyYAML, dnspython: foundation.yaml and the dns strategy are the operator's):
# the agent (``python3 -m foundation_cli.agent``) imports none of it, as target bundles
# (AGENT_REQUIREMENTS) already assume. Left out, every host uploads and unpacks about half the bytes.
CLI_ONLY = {"typer", "click", "rich", "pygments", "markdown-it-py", "mdurl", "shellingham", "pyyaml", "dnspython"}

# Subpackages of this package only the CLI uses (a quarter of its files): left out of every bundle.
CLI_PACKAGES = {"commands", "facades", "schemas"}


MIN_PYTHON = (3, 9)
# The agent's third-party imports (foundation_cli.agent and what it imports): resolved with their
# dependencies for the target. py-consul declares Python ≥ 3.10 but runs on 3.9 (checked on Debian
# 11): it is fetched at this machine's version without its Requires-Python (its one dependency,
# requests, is in the resolved set).
AGENT_REQUIREMENTS = ("requests", "zeroconf")
# Only for mDNS: when no zeroconf fits the host's Python (an air-gapped wheelhouse without one), the
# bundle goes without it and the agent there neither advertises nor browses (it says so in its log).
OPTIONAL_REQUIREMENTS = ("zeroconf",)
IGNORE_REQUIRES_PYTHON = ("py-consul",)
_PLATFORMS = {
    "x86_64": ("manylinux_2_17_x86_64", "manylinux2014_x86_64"),
    "aarch64": ("manylinux_2_17_aarch64", "manylinux2014_aarch64"),
    "armv7l": ("manylinux_2_17_armv7l", "manylinux2014_armv7l", "linux_armv7l"),
}
_SOURCE_ONLY = (".pyx", ".pxd", ".c", ".h")


@dataclass
class Bundle:
    path: Path
    sha256: str
    python: str  # "3.11"
    arch: str  # "x86_64"
    size: int
    compiled: list[str] = field(default_factory=list)  # compiled modules kept (no pure twin): for the target only
    missing: list[str] = field(default_factory=list)  # optional requirements no wheel fitted (zeroconf: no mDNS)


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
    out = _own_source()
    for dist in _deps():
        if _norm(dist.metadata["Name"] or "") in CLI_ONLY:
            continue
        names = {str(f) for f in dist.files or []}
        for f in dist.files or []:
            if "__pycache__" in f.parts or str(f).endswith(".pyc") or str(f).startswith(".."):
                continue
            if str(f).endswith(".so") and str(f).split(".", 1)[0] + ".py" in names:
                continue  # a compiled speed-up whose pure-Python twin ships (zeroconf): half the bytes
            local = Path(dist.locate_file(f))
            if local.is_file():
                out.append((str(f), local))
    return out


def _add_pyc(tar: tarfile.TarFile, name: str, path: Path) -> None:
    """The module's bytecode beside it, as this Python caches it (this fast path is for hosts with this
    Python's version): every host then skips compiling the agent at its first start (~0.3 s CPU each).
    Checked-hash pycs (PEP 552): valid whatever the files' mtimes, recompiled if a source changes."""
    import importlib.util
    import py_compile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="foundation-pyc-") as tmp:
        cfile = os.path.join(tmp, "m.pyc")
        try:
            py_compile.compile(
                str(path),
                cfile=cfile,
                dfile=name,
                doraise=True,
                invalidation_mode=py_compile.PycInvalidationMode.CHECKED_HASH,
            )
        except py_compile.PyCompileError:  # not importable here (a template, another Python's code)
            return
        data = Path(cfile).read_bytes()
    parent, _, base = name.rpartition("/")
    cached = importlib.util.cache_from_source(base)  # __pycache__/mod.cpython-311.pyc
    info = tarfile.TarInfo(f"{parent}/{cached}" if parent else cached)
    info.size, info.mode = len(data), 0o644
    tar.addfile(info, io.BytesIO(data))


def _add_file(tar: tarfile.TarFile, name: str, path: Path) -> None:
    """``path`` as ``name``, owned by root with mtime 0: the same sources make the same bytes."""
    info = tar.gettarinfo(str(path), arcname=name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = 0
    with open(path, "rb") as fh:
        tar.addfile(info, fh)


def _write_bundle(target: Path, add: Callable[[tarfile.TarFile], None], *, compresslevel: int) -> None:
    """Write the .tar.gz ``add`` fills (atomically: a reader never sees half), then drop older bundles
    for the same Python and architecture (``agent-<python>-<arch>-<tag>.tar.gz``)."""
    import gzip

    target.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buf, mode="wb", compresslevel=compresslevel, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w") as tar,
    ):
        add(tar)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_bytes(buf.getvalue())
    os.replace(tmp, target)
    prune_bundles(target)


STALE_BUNDLE_SECONDS = 3600.0
"""Another bundle for the same Python and architecture is deleted once it is this old: a second
checkout (or an `up` of another version) building at the same time still has its own."""


def prune_bundles(target: Path, *, now: float | None = None) -> None:
    """Drop bundles of the same Python and architecture as ``target`` not used for an hour."""
    now = time.time() if now is None else now
    prefix = target.name.rsplit("-", 1)[0]
    for old in target.parent.glob(f"{prefix}-*.tar.gz"):
        with contextlib.suppress(OSError):
            if old != target and now - old.stat().st_mtime > STALE_BUNDLE_SECONDS:
                old.unlink()


def _used(target: Path) -> Path:
    """A cached bundle taken again: its mtime says it is in use (see :func:`prune_bundles`)."""
    with contextlib.suppress(OSError):
        os.utime(target)
    return target


def python_tag() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "foundation"


def build() -> Bundle:
    """The bundle for this machine's Python (cached; rebuilt when the package or a dep changes).

    ``FOUNDATION_AGENT_BUNDLE=path.tar.gz`` uses a prebuilt bundle instead (another Python or
    architecture than this machine's, or a pinned release); ``FOUNDATION_AGENT_BUNDLE=DIR`` takes
    ``agent-<python>-<arch>-*.tar.gz`` from DIR for each target that has one there.
    """
    explicit = os.environ.get("FOUNDATION_AGENT_BUNDLE")
    if explicit and os.path.isdir(explicit):
        explicit = str(
            next(iter(sorted(Path(explicit).glob(f"agent-{python_tag()}-{platform.machine()}-*.tar.gz"))), "")
        )
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

        def add(tar: tarfile.TarFile) -> None:
            for name, path in files:
                _add_file(tar, name, path)
                if name.endswith(".py"):
                    _add_pyc(tar, name, path)

        _write_bundle(target, add, compresslevel=1)
    data = _used(target).read_bytes()
    return Bundle(
        path=target,
        sha256=hashlib.sha256(data).hexdigest(),
        python=python_tag(),
        arch=platform.machine(),
        size=len(data),
    )


# ---------------------------------------------------------------------------------------------
# Bundles for another Python or architecture than this machine's


def parse_version(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(x) for x in text.split(".")[:2])
    except ValueError:
        return ()


def python_supported(python: str) -> bool:
    v = parse_version(python)
    return bool(v) and v >= MIN_PYTHON


def wheel_dir(python: str, arch: str) -> Path:
    return cache_dir() / "wheels" / f"{python}-{arch}"


def _pip_download(
    dest: Path, python: str, arch: str, reqs: list[str], *, wheelhouse: str | None, extra: list[str]
) -> None:
    nodot = python.replace(".", "")
    argv = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--dest", str(dest)]
    argv += ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    argv += ["--abi", f"cp{nodot}", "--abi", "abi3", "--abi", "none"]
    for plat in _PLATFORMS.get(arch, (f"linux_{arch}",)):
        argv += ["--platform", plat]
    if wheelhouse:
        argv += ["--no-index", "--find-links", os.path.expanduser(wheelhouse)]
    proc = subprocess.run(argv + extra + reqs, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        from foundation_cli.errors import FoundationError

        lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip() and "WARNING" not in ln]
        where = f"wheelhouse {wheelhouse}" if wheelhouse else "the package index"
        raise FoundationError(
            f"no agent dependencies for Python {python} on {arch} from {where}: "
            + (lines[-1].strip() if lines else f"pip exited {proc.returncode}"),
            hint="give a wheelhouse with wheels for that Python (agent.wheelhouse in foundation.yaml; "
            f"`pip download --python-version {python} --only-binary=:all: py-consul requests zeroconf -d DIR` "
            "on a connected machine), or FOUNDATION_AGENT_BUNDLE=path",
        )


def fetch_wheels(python: str, arch: str, *, wheelhouse: str | None = None) -> list[Path]:
    """The agent's dependency wheels for Python ``python`` on ``arch`` (downloaded once, cached)."""
    tag = (
        "wheelhouse-" + hashlib.sha256(os.path.abspath(os.path.expanduser(wheelhouse)).encode()).hexdigest()[:8]
        if wheelhouse
        else "index"
    )
    dest = wheel_dir(python, arch) / tag
    pins = [f"{name}=={md.version(name)}" for name in IGNORE_REQUIRES_PYTHON]
    spec = " ".join(list(AGENT_REQUIREMENTS) + pins)
    marker = dest / ".complete"
    dest.mkdir(parents=True, exist_ok=True)
    with open(dest / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (marker.is_file() and marker.read_text() == spec):
            from foundation_cli.errors import FoundationError

            for old in dest.glob("*.whl"):
                old.unlink()
            try:
                _pip_download(dest, python, arch, list(AGENT_REQUIREMENTS), wheelhouse=wheelhouse, extra=[])
            except FoundationError:
                required = [r for r in AGENT_REQUIREMENTS if r not in OPTIONAL_REQUIREMENTS]
                _pip_download(dest, python, arch, required, wheelhouse=wheelhouse, extra=[])  # raises the real lack
            _pip_download(
                dest, python, arch, pins, wheelhouse=wheelhouse, extra=["--no-deps", "--ignore-requires-python"]
            )
            marker.write_text(spec)
    return sorted(dest.glob("*.whl"))


def _wheel_members(whl: Path) -> tuple[list[zipfile.ZipInfo], list[str]]:
    """Members to ship (compiled modules with a pure-Python twin dropped) and compiled ones kept."""
    with zipfile.ZipFile(whl) as zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
    names = {i.filename for i in infos}
    keep, compiled = [], []
    for info in infos:
        name = info.filename
        if name.endswith(_SOURCE_ONLY) or "__pycache__" in name:
            continue
        if name.endswith(".so"):
            twin = name.split(".", 1)[0] + ".py"
            if twin in names:
                continue
            compiled.append(name)
        keep.append(info)
    return keep, compiled


def _own_source() -> list[tuple[str, Path]]:
    """This package's files the agent can import: not the CLI's commands and facades (the layers
    contract in pyproject.toml keeps the agent from importing them, and lint-imports checks it)."""
    pkg_dir = Path(foundation_cli.__file__).parent
    out = []
    for path in sorted(pkg_dir.rglob("*")):
        rel = path.relative_to(pkg_dir)
        if not path.is_file() or "__pycache__" in rel.parts or path.name.endswith(".pyc"):
            continue
        if rel.parts[0] in CLI_PACKAGES:
            continue
        out.append((str(Path("foundation_cli") / rel), path))
    return out


_build_lock = threading.Lock()


def for_target(python: str, arch: str, *, wheelhouse: str | None = None) -> Bundle:
    """The bundle for a host with CPython ``python`` (``"3.9"``) on ``arch`` (``uname -m``), cached."""
    with _build_lock:  # hosts of one `up` are worked on in threads: build each target once
        return _for_target(python, arch, wheelhouse=wheelhouse)


def _for_target(python: str, arch: str, *, wheelhouse: str | None) -> Bundle:
    from foundation_cli.errors import UsageError

    if not python_supported(python):
        raise UsageError(f"the node agent needs CPython {'.'.join(map(str, MIN_PYTHON))}+, not {python or 'none'}")
    wheels = fetch_wheels(python, arch, wheelhouse=wheelhouse)
    own = _own_source()
    key = hashlib.sha256(f"{python} {arch}\n".encode())
    for name, path in own:
        key.update(name.encode() + b" " + hashlib.sha256(path.read_bytes()).digest() + b"\n")
    for whl in wheels:
        key.update(f"{whl.name} {whl.stat().st_size}\n".encode())
    tag = key.hexdigest()[:16]
    target = cache_dir() / f"agent-{python}-{arch}-{tag}.tar.gz"
    compiled: list[str] = []
    members = [(whl, *_wheel_members(whl)) for whl in wheels]
    for _whl, _keep, kept_compiled in members:
        compiled += kept_compiled
    if not target.exists():

        def add(tar: tarfile.TarFile) -> None:
            for name, path in own:
                _add_file(tar, name, path)
            for whl, keep, _compiled in members:
                with zipfile.ZipFile(whl) as zf:
                    for zinfo in keep:
                        data = zf.read(zinfo)
                        info = tarfile.TarInfo(zinfo.filename)
                        info.size = len(data)
                        info.mode = 0o755 if zinfo.filename.endswith(".so") else 0o644
                        tar.addfile(info, io.BytesIO(data))

        _write_bundle(target, add, compresslevel=6)
    data = _used(target).read_bytes()
    have = {_norm(w.name.split("-", 1)[0]) for w in wheels}
    missing = [r for r in OPTIONAL_REQUIREMENTS if _norm(r) not in have]
    return Bundle(target, hashlib.sha256(data).hexdigest(), python, arch, len(data), compiled, missing)


class Selector:
    """One ``up``'s bundles: the prebuilt/local one when a host matches it, else one per (python, arch).

    ``local`` is a Bundle or a callable giving it (built once, when first needed).
    """

    def __init__(self, local: Bundle | Callable[[], Bundle] | None = None, *, wheelhouse: str | None = None) -> None:
        self._local = local
        self.wheelhouse = wheelhouse
        self._lock = threading.Lock()
        self._built: dict[tuple[str, str], Bundle] = {}

    def local(self) -> Bundle:
        with self._lock:
            if self._local is None:
                self._local = build()
            elif callable(self._local):
                self._local = self._local()
            return self._local

    def __call__(self, python: str, arch: str) -> Bundle:
        here = self.local()
        if (not python or python == here.python) and (not arch or arch == here.arch):
            return here
        key = (python, arch)
        with self._lock:
            if key not in self._built:
                self._built[key] = pinned(python, arch) or for_target(python, arch, wheelhouse=self.wheelhouse)
            return self._built[key]


def pinned(python: str, arch: str) -> Bundle | None:
    """The prebuilt bundle for (python, arch) in ``FOUNDATION_AGENT_BUNDLE=DIR``, if there is one."""
    folder = os.environ.get("FOUNDATION_AGENT_BUNDLE")
    if not folder or not os.path.isdir(folder):
        return None
    found = sorted(Path(folder).glob(f"agent-{python}-{arch}-*.tar.gz"))
    if not found:
        return None
    data = found[0].read_bytes()
    return Bundle(found[0], hashlib.sha256(data).hexdigest(), python, arch, len(data))
