"""Run one service instance as a local process: own process group, log file, pid file, adoption.

Each instance has a directory ``<data>/nodes/<node>/services/<name>/`` with
``instance.json`` (pid, process group, the kernel's start time of the pid —
so a recycled pid is never mistaken for ours — spec digest, restarts) and
``output.log`` (stdout+stderr, appended; rotated by copy-and-truncate so a
running process keeps writing, at most ``LOG_KEEP`` old files of
``LOG_MAX_BYTES``).

Exits are noticed by a thread blocked in ``wait()`` (our child) or on a pidfd
(a process adopted from a previous agent run): no polling.

A singleton runs under a fence guard (:mod:`.fence_guard`, started by
:meth:`Instance.spawn` with a :class:`Lease`): a separate small process that
stops it when the agent stops renewing the lease — the agent died, froze
(SIGSTOP, a paused VM) or cannot confirm its session — so a singleton never
outlives the right to run it, whether or not the agent is scheduled.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foundation_cli.core.service_spec import ServiceSpec

LOG_MAX_BYTES = 10 * 1024 * 1024
LOG_KEEP = 3


def proc_start_ticks(pid: int) -> int | None:
    """The process start time (clock ticks since boot) from /proc/<pid>/stat, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    try:
        if fields[0] == "Z":
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def _killpg(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


class Instance:
    """One running (or restarting) copy of a service on this node."""

    def __init__(self, spec: ServiceSpec, directory: Path, node: str) -> None:
        self.spec = spec
        self.name = spec.name
        self.mode = spec.mode
        self.digest = spec.digest()
        self.dir = directory
        self.node = node
        self.proc: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pgid: int | None = None
        self.start_ticks: int | None = None
        self.started: float | None = None  # epoch seconds
        self.started_mono: float = 0.0
        self.restarts = 0
        self.state = "new"  # running | exited | failed | backoff | stopped | fenced
        self.exit_code: int | None = None
        self.error: str | None = None
        self.failures = 0  # consecutive exits with a non-zero status soon after start
        self.last_output: list[str] = []  # the log's last lines at the last exit (untrusted text)
        self.log_start = 0  # the output log's size when the current run started: its output begins there
        self.stopping = False
        self.adopted = False
        self.disk_error: str | None = None  # instance.json could not be written (disk full): retried
        self._lock = threading.Lock()
        self._exited = threading.Event()
        self._lease_lock = threading.Lock()
        self._lease_fd: int | None = None  # write end of the fence guard's lease pipe

    @property
    def log_path(self) -> Path:
        return self.dir / "output.log"

    @property
    def meta_path(self) -> Path:
        return self.dir / "instance.json"

    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.proc is not None:
            return self.proc.poll() is None
        return proc_start_ticks(self.pid) == self.start_ticks

    # -- start ---------------------------------------------------------------------
    def spawn(
        self,
        extra_env: dict[str, str],
        on_exit: Callable[[Instance], None],
        lease: Lease | None = None,
        warm: WarmGuard | None = None,
    ) -> None:
        """Start the command in its own session/process group; raises OSError if it cannot be executed.

        With a ``lease`` (singletons) the command runs under a fence guard
        (:mod:`.fence_guard`) that stops it when the lease is not renewed in time
        (:meth:`renew`), whether or not this agent is alive or scheduled. A ``warm``
        guard (:class:`WarmGuard`, started ahead for this spec) is used instead of
        starting one, if it still fits; it is discarded otherwise.
        """
        if warm is not None and (lease is None or not warm.fits(self.spec)):
            warm.discard()
            warm = None
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            env = _service_env(extra_env)
            as_user = run_as(self.spec.user, env)  # --user: drop privileges for the child (raises OSError)
            env.update(self.spec.env)
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        except OSError:
            if warm is not None:
                warm.discard()
            raise
        self.log_start = os.fstat(log_fd).st_size
        try:
            with self._lock:
                self.stopping = False
                self._exited.clear()
                self._close_lease()
                self.fence_marker.unlink(missing_ok=True)
                if warm is not None:  # already running, as the user, in cwd, writing to the log: send the command
                    warm.taken = True  # its pipes are this instance's now: never discarded
                    popen: _GuardedStart | None = warm.start
                    self.proc = warm.proc
                else:
                    popen = _GuardedStart() if lease is not None else None
                    self.proc = _spawn(
                        popen.argv if popen else self.spec.command,
                        cwd=self.spec.cwd,
                        env=env,
                        log_fd=log_fd,
                        pass_fds=popen.pass_fds if popen else (),
                        as_user=as_user,
                    )
                self.pid = self.proc.pid
                self.pgid = self.proc.pid
                if popen:
                    assert lease is not None
                    first = {
                        "argv": list(self.spec.command),
                        "deadline": lease.deadline,
                        "grace": lease.grace,
                        "marker": str(self.fence_marker),
                    }
                    if warm is not None:
                        first["env"] = env
                    self.pid, self._lease_fd = popen.handshake(self.proc, first)
                self.start_ticks = proc_start_ticks(self.pid)
                self.started = time.time()
                self.started_mono = time.monotonic()
                self.state = "running"
                self.exit_code = None
                self.error = None
                self.adopted = False
        finally:
            os.close(log_fd)
        self.try_save()  # the process runs whatever the disk says: never a second copy for a full disk
        threading.Thread(
            target=self._wait_child, args=(self.proc, on_exit), daemon=True, name=f"wait-{self.name}"
        ).start()

    def _wait_child(self, proc: subprocess.Popen, on_exit: Callable[[Instance], None]) -> None:
        code = proc.wait()
        with self._lock:
            if proc is not self.proc:
                return
            self._close_lease()
            self.exit_code = code
            self._exited.set()
        on_exit(self)

    # -- the fence guard's lease (singletons) --------------------------------------
    @property
    def fence_marker(self) -> Path:
        return self.dir / "fenced"

    def renew(self, deadline: float) -> None:
        """Extend the guard's lease to ``deadline`` (monotonic); never blocks, never raises."""
        with self._lease_lock:
            if self._lease_fd is None:
                return
            try:
                os.write(self._lease_fd, f"{deadline:.6f}\n".encode())
            except OSError:  # guard gone (its exit is being reported) or pipe full: the next one counts
                pass

    def fence_fired(self) -> str | None:
        """Why the guard stopped the process (it leaves a marker), or None."""
        try:
            return self.fence_marker.read_text().strip() or "fenced"
        except OSError:
            return None

    def _close_lease(self) -> None:
        with self._lease_lock:
            fd, self._lease_fd = self._lease_fd, None
        if fd is not None:
            os.close(fd)

    # -- adopt ---------------------------------------------------------------------
    @classmethod
    def load(cls, spec: ServiceSpec | None, directory: Path, node: str) -> tuple[Instance | None, dict]:
        """Read ``instance.json``; return an Instance only if its process is still the one we started."""
        try:
            meta = json.loads((directory / "instance.json").read_text())
        except (OSError, ValueError):
            return None, {}
        pid = meta.get("pid")
        if not isinstance(pid, int) or proc_start_ticks(pid) != meta.get("start_ticks"):
            return None, meta
        placeholder = spec or ServiceSpec(name=directory.name, mode=meta.get("mode", "replicated"), command=["?"])
        inst = cls(placeholder, directory, node)
        inst.pid, inst.pgid, inst.start_ticks = pid, meta.get("pgid", pid), meta.get("start_ticks")
        inst.started = meta.get("started")
        inst.started_mono = time.monotonic() - max(0.0, time.time() - (inst.started or time.time()))
        inst.restarts = int(meta.get("restarts", 0))
        inst.digest = meta.get("digest", "")
        inst.mode = meta.get("mode", placeholder.mode)
        inst.state = "running"
        inst.adopted = True
        return inst, meta

    def watch_adopted(self, on_exit: Callable[[Instance], None]) -> None:
        """Notice the exit of a process that is not our child (pidfd; no polling)."""

        def wait() -> None:
            try:
                fd = os.pidfd_open(self.pid)  # type: ignore[arg-type]
            except OSError:
                fd = None
            if fd is not None:
                try:
                    select.select([fd], [], [])
                finally:
                    os.close(fd)
            with self._lock:
                if self.proc is not None:
                    return
                self.exit_code = None
                self._exited.set()
            on_exit(self)

        threading.Thread(target=wait, daemon=True, name=f"adopted-{self.name}").start()

    # -- stop ----------------------------------------------------------------------
    def terminate(self, grace: float) -> None:
        """SIGTERM the process group, SIGKILL whatever is left after ``grace`` seconds."""
        with self._lock:
            self.stopping = True
            pgid, pid = self.pgid, self.pid
            done = self.state in ("stopped", "fenced")
        if pgid is None or pid is None or done:
            return
        if self.proc is None and proc_start_ticks(pid) != self.start_ticks:
            # An adopted process that already exited: its group id may now belong to someone else.
            self._forget()
            return
        _killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            if self.proc is not None:
                if self._exited.wait(min(0.05, max(0.0, deadline - time.monotonic()))) and not _group_alive(pgid):
                    break
            elif not _group_alive(pgid):
                break
            else:
                time.sleep(0.05)
        _killpg(pgid, signal.SIGKILL)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                pass
        self._forget()

    def _forget(self) -> None:
        with self._lock:
            self.state = "stopped"
        try:
            self.meta_path.unlink()
        except FileNotFoundError:
            pass

    # -- bookkeeping -----------------------------------------------------------------
    def save(self) -> None:
        meta = {
            "name": self.name,
            "mode": self.mode,
            "pid": self.pid,
            "pgid": self.pgid,
            "start_ticks": self.start_ticks,
            "started": self.started,
            "restarts": self.restarts,
            "digest": self.digest,
            "generation": self.spec.generation,
            "node": self.node,
        }
        tmp = self.meta_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.meta_path)

    def try_save(self) -> bool:
        """:meth:`save`, keeping a full (or read-only) disk as ``disk_error`` (reported in the status)
        instead of failing: the old ``instance.json`` stays whole (written aside, then renamed)."""
        try:
            self.save()
        except OSError as exc:
            self.disk_error = f"cannot write {self.meta_path}: {exc.strerror or exc}"
            return False
        self.disk_error = None
        return True

    def rotate_log(self, max_bytes: int = LOG_MAX_BYTES, keep: int = LOG_KEEP) -> bool:
        """Copy-and-truncate rotation (the process keeps its O_APPEND descriptor)."""
        try:
            if self.log_path.stat().st_size < max_bytes:
                return False
        except FileNotFoundError:
            return False
        for i in range(keep - 1, 0, -1):
            older = self.log_path.with_name(f"output.log.{i}")
            if older.exists():
                os.replace(older, self.log_path.with_name(f"output.log.{i + 1}"))
        shutil.copyfile(self.log_path, self.log_path.with_name("output.log.1"))
        with open(self.log_path, "r+b") as fh:
            fh.truncate(0)
        return True

    def tail_output(self, lines: int = 5, max_bytes: int = 4096) -> list[str]:
        """The last run's last ``lines`` output lines (each cut to 200 characters), for a failure report."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(0, os.SEEK_END)
                end = fh.tell()
                fh.seek(max(self.log_start if self.log_start <= end else 0, end - max_bytes))
                data = fh.read()
        except OSError:
            return []
        text = data.decode("utf-8", "replace")
        return [line[:200] for line in text.splitlines() if line.strip()][-lines:]

    def status(self) -> dict:
        """What goes to ``foundation/status/<name>/<node>``."""
        return {
            "node": self.node,
            "mode": self.mode,
            "pid": self.pid if self.state == "running" else None,
            "state": self.state,
            "started": self.started,
            "restarts": self.restarts,
            "exit_code": self.exit_code,
            "generation": self.spec.generation,
            "error": self.error or self.disk_error,
            "failures": self.failures,
            "last_output": self.last_output,
            "log": str(self.log_path),
        }


@dataclass(frozen=True)
class Lease:
    """A fence guard's first lease: until ``deadline`` (``time.monotonic()``), SIGKILL ``grace`` after SIGTERM."""

    deadline: float
    grace: float


GUARD_SCRIPT = Path(__file__).with_name("fence_guard.py")
GUARD_START_TIMEOUT = 10.0


def _spawn(argv, *, cwd: str | None, env: dict[str, str], log_fd: int, pass_fds, as_user: dict) -> subprocess.Popen:
    """An instance's process: its own session (so its group can be signalled), output to its log."""
    return subprocess.Popen(
        argv,
        cwd=cwd or None,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log_fd,
        stderr=log_fd,
        start_new_session=True,
        close_fds=True,
        pass_fds=pass_fds,
        **as_user,
    )


def _service_env(extra_env: dict[str, str]) -> dict[str, str]:
    """The agent's environment without its own ACL tokens (not the service's), plus ``extra_env``."""
    env = dict(os.environ)
    for name in ("CONSUL_HTTP_TOKEN", "CONSUL_HTTP_TOKEN_FILE", "FOUNDATION_SNAPSHOT_TOKEN_FILE"):
        env.pop(name, None)
    env.update(extra_env)
    return env


class _GuardedStart:
    """Start a command under the fence guard: two pipes, the command sent over the lease pipe, a handshake."""

    def __init__(self) -> None:
        self.lease_r, self.lease_w = os.pipe()
        self.status_r, self.status_w = os.pipe()
        # -I -S: no site, no user paths, no PYTHON* variables: a few ms, and only the stdlib.
        self.argv = [sys.executable, "-I", "-S", str(GUARD_SCRIPT), str(self.lease_r), str(self.status_w)]
        self.pass_fds = (self.lease_r, self.status_w)
        self._child_ends_open = True

    def close_child_ends(self) -> None:
        """The guard has its copies of the pipe ends it uses: close ours (once)."""
        if self._child_ends_open:
            self._child_ends_open = False
            os.close(self.lease_r)
            os.close(self.status_w)

    def close_parent_ends(self) -> None:
        """Our ends of both pipes: the guard reads EOF on its lease pipe and exits having started nothing."""
        for fd in (self.lease_w, self.status_r):
            try:
                os.close(fd)
            except OSError:
                pass

    def handshake(self, proc: subprocess.Popen, first: dict) -> tuple[int, int]:
        """Send the command and first lease; return (the command's pid, the lease pipe's write end)."""
        self.close_child_ends()
        try:
            os.write(self.lease_w, (json.dumps(first) + "\n").encode())
            os.set_blocking(self.lease_w, False)
            line = _read_line(self.status_r, GUARD_START_TIMEOUT)
        except OSError:
            line = ""
        finally:
            os.close(self.status_r)
        if line.startswith("pid "):
            return int(line.split()[1]), self.lease_w
        os.close(self.lease_w)
        _killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if line.startswith("err "):
            _tag, errno, *message = line.split(" ", 2)
            raise OSError(int(errno), message[0] if message else "cannot execute")
        raise OSError(5, "the fence guard did not start")


class WarmGuard:
    """A fence guard started before the lock is ours, waiting for its command (:meth:`Instance.spawn`).

    A contender starts one shortly before lock-delay ends, so the guard's own
    start-up (a Python interpreter: ≈ 15 ms idle, ≈ 0.1 s on a loaded node) is
    off the takeover's path. It runs as the spec's user, in its cwd, writing to
    its log, exactly as a guard started at spawn time; the command's environment
    (with the fencing token, known only after the acquire) goes in the first
    line. Until then it has started nothing, holds no lock and needs no lease;
    :meth:`discard` (or the agent's death) closes its lease pipe and it exits.
    """

    def __init__(self, spec: ServiceSpec, directory: Path) -> None:
        self.digest = spec.digest()
        self.taken = False  # handed to Instance.spawn
        self.closed = False
        directory.mkdir(parents=True, exist_ok=True)
        env = _service_env({})
        as_user = run_as(spec.user, env)
        self.start = _GuardedStart()
        log_fd = os.open(directory / "output.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o640)
        try:
            self.proc = _spawn(
                self.start.argv, cwd=spec.cwd, env=env, log_fd=log_fd, pass_fds=self.start.pass_fds, as_user=as_user
            )
        except OSError:
            self.start.close_child_ends()
            self.start.close_parent_ends()
            raise
        finally:
            os.close(log_fd)
        self.start.close_child_ends()

    def fits(self, spec: ServiceSpec) -> bool:
        """Started for this very spec (command, user, cwd…) and still waiting."""
        return not (self.taken or self.closed) and self.digest == spec.digest() and self.proc.poll() is None

    def discard(self) -> None:
        """Close its lease pipe: it exits having started nothing (reaped in the background)."""
        if self.taken or self.closed:
            return
        self.closed = True
        self.start.close_parent_ends()
        threading.Thread(target=self.proc.wait, daemon=True, name="warm-guard-reap").start()


def _read_line(fd: int, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def run_as(user: str | None, env: dict[str, str]) -> dict:
    """``subprocess.Popen`` arguments that run the child as ``user`` (its uid, gid and groups only).

    ``None``: as the agent itself (root on a node made by ``up``). Sets HOME/USER/LOGNAME in ``env``.
    An unknown user is an ``OSError`` (the instance fails to start, like a missing program).
    """
    if user is None:
        return {}
    import errno
    import pwd

    try:
        pw = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except (KeyError, ValueError):
        raise OSError(errno.EINVAL, f"no such user on this node: {user}") from None
    env.update(HOME=pw.pw_dir, USER=pw.pw_name, LOGNAME=pw.pw_name)
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": os.getgrouplist(pw.pw_name, pw.pw_gid)}
