"""The fence guard: runs one singleton process and stops it when its lease runs out.

Standalone on purpose — stdlib only, Python ≥ 3.9, nothing from foundation_cli —
so it starts in a few milliseconds and keeps working whatever happens to the
agent. The agent starts it (``python3 -I -S fence_guard.py LEASE_FD STATUS_FD``)
in a new session; the guard is the leader of the process group in which it
starts the singleton's command, and so outlives nothing it guards.

Protocol, on two pipes from the agent:

- LEASE_FD (agent → guard): the first line is JSON ``{"argv": [...],
  "deadline": D, "grace": G, "marker": PATH}`` (and ``"env": {...}`` when the
  guard was started before the command's environment was known: a *warm*
  guard, started while lock-delay runs out, so its start-up is not on the
  takeover's path); every later line is a new deadline. A guard whose lease
  pipe closes before the first line exits having started nothing. Deadlines are ``CLOCK_MONOTONIC`` seconds (``time.monotonic()``,
  one clock for every process of the machine): the send time of the agent's
  last successful ``?consistent`` session confirmation plus the fence timeout.
  A lease only ever grows.
- STATUS_FD (guard → agent): one line, ``pid N`` once the command runs, or
  ``err ERRNO MESSAGE`` if it cannot be executed; then closed.

The guard stops the process group — SIGTERM, then SIGKILL ``grace`` seconds
later, itself included — when the deadline passes (the agent is frozen,
starved or cut off: it could not confirm its session in time) or when the
lease pipe closes (the agent died). Before that it writes MARKER, so the agent
can tell a fenced exit from a crash. This does not depend on the agent being
alive or scheduled: a SIGSTOPped agent still loses its singleton on time,
within the inequality of ``core/timing.py``::

    fence_timeout + fence_kill_grace + fence_margin < lock_delay

When the command exits by itself, the guard exits the same way (same code, or
the same signal), so the agent sees the command's own exit status.
"""

import json
import os
import select
import signal
import subprocess
import sys
import time


def _noop(_signum, _frame):
    """The agent's SIGTERM to the group is for the command; the guard waits for it to exit."""


def _exit_like(code):
    sys.stderr.flush()
    if code >= 0:
        os._exit(code)
    sig = -code
    try:
        signal.signal(sig, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), sig)
    time.sleep(1.0)
    os._exit(128 + sig)


def _fire(child, grace, marker, why):
    """Stop the whole process group: SIGTERM, SIGKILL after ``grace`` (this guard included)."""
    try:
        with open(marker, "w") as fh:
            fh.write(f"{why} {time.time():.3f}\n")
    except (OSError, TypeError):
        pass
    pgid = os.getpgrp()
    sys.stderr.write(f"foundation fence guard: {why}: stopping process group {pgid}\n")
    sys.stderr.flush()
    try:
        os.killpg(pgid, signal.SIGTERM)
    except OSError:
        pass
    end = time.monotonic() + grace
    while time.monotonic() < end and child.poll() is None:
        time.sleep(0.02)
    os.killpg(pgid, signal.SIGKILL)
    os._exit(137)


def _read_line(fd, buf):
    while b"\n" not in buf:
        chunk = os.read(fd, 65536)
        if not chunk:
            return None, buf
        buf += chunk
    line, rest = buf.split(b"\n", 1)
    return line, rest


def main(argv):
    lease_fd, status_fd = int(argv[1]), int(argv[2])
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _noop)
    line, buf = _read_line(lease_fd, b"")
    if line is None:
        return 1  # the agent went away before telling us what to run
    config = json.loads(line.decode())
    deadline = float(config["deadline"])
    grace = float(config["grace"])
    marker = config.get("marker")
    try:
        # Inherits cwd, environment, stdio (the log) and this process group; handlers reset at exec.
        child = subprocess.Popen(config["argv"], close_fds=True, env=config.get("env"))
    except OSError as exc:
        os.write(status_fd, f"err {exc.errno or 0} {exc.strerror or exc}\n".encode())
        return 127
    os.write(status_fd, f"pid {child.pid}\n".encode())
    os.close(status_fd)
    try:
        pidfd = os.pidfd_open(child.pid)
    except (AttributeError, OSError):
        pidfd = None  # old kernel: look at the child every 0.1 s
    while True:
        now = time.monotonic()
        timeout = max(0.0, deadline - now)
        fds = [lease_fd] if pidfd is None else [lease_fd, pidfd]
        ready, _w, _x = select.select(fds, [], [], timeout if pidfd is not None else min(timeout, 0.1))
        if lease_fd in ready:
            chunk = os.read(lease_fd, 65536)
            if not chunk:
                if child.poll() is not None:
                    _exit_like(child.returncode)
                _fire(child, grace, marker, "agent gone (lease pipe closed)")
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                try:
                    deadline = max(deadline, float(raw))
                except ValueError:
                    pass
        if child.poll() is not None:
            _exit_like(child.returncode)
        if time.monotonic() >= deadline:
            _fire(child, grace, marker, "lease expired (session not confirmed in time)")


if __name__ == "__main__":
    sys.exit(main(sys.argv))
