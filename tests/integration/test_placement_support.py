"""Helpers for the placement tests and bench (no tests here): agents, the witness, CLI runs.

The witness is the placed process: it appends ``start``/``beat``/``stop`` lines
with a timestamp, its node and pid to a file in a directory every lab host
shares (/dev/shm: the lab overlays /etc, /var, /root… and makes /tmp private,
but not /dev/shm), so overlap between instances on different hosts is visible
from outside.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

WITNESS = r"""
import os, signal, sys, time
path, node, pid = sys.argv[1], os.environ.get("FOUNDATION_NODE", "?"), os.getpid()
def note(kind):
    with open(path, "a") as fh:
        fh.write(f"{kind} {time.time():.3f} {node} {pid}\n")
def bye(*_):
    note("stop")
    sys.exit(0)
signal.signal(signal.SIGTERM, bye)
note("start")
print("witness started", node, pid, flush=True)
while True:
    time.sleep(0.05)
    note("beat")
"""


def shared_dir(prefix: str = "foundation-placement-") -> Path:
    """A directory visible at the same path on the machine and inside every lab host."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


def write_witness(directory: Path) -> tuple[Path, Path]:
    script = directory / "witness.py"
    script.write_text(WITNESS)
    log = directory / "witness.log"
    log.touch()
    os.chmod(directory, 0o777)
    os.chmod(log, 0o666)
    return script, log


@dataclass
class Run:
    pid: int
    node: str
    first: float
    last: float
    stopped: bool


def witness_runs(log: Path) -> list[Run]:
    """One entry per witness process: its first and last line (start/beat/stop)."""
    runs: dict[int, Run] = {}  # the current run of each pid
    done: list[Run] = []
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        kind, ts, node, pid = parts[0], float(parts[1]), parts[2], int(parts[3])
        run = runs.get(pid)
        if run is not None and kind == "start":  # the kernel reused the pid (long campaigns): a new process
            done.append(run)
            run = None
        if run is None:
            runs[pid] = run = Run(pid, node, ts, ts, False)
        run.first, run.last = min(run.first, ts), max(run.last, ts)
        run.stopped = run.stopped or kind == "stop"
    return sorted(done + list(runs.values()), key=lambda r: r.first)


def overlaps(runs: list[Run]) -> list[tuple[Run, Run]]:
    """Pairs of runs whose [first, last] intervals intersect."""
    found = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            if b.first < a.last and a.first < b.last:
                found.append((a, b))
    return found


def wait_for(cond: Callable[[], object], timeout: float, what: str, interval: float = 0.1):
    """Poll ``cond`` until it returns something true. An error inside ``cond`` (a helper below raising
    while the cluster recovers) counts as "not yet"; the last one is reported if time runs out."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = cond()
        except (AssertionError, OSError, ValueError, subprocess.SubprocessError) as exc:
            last_error, value = exc, None
        if value:
            return value
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")


def cli(
    args: list[str], env: Mapping[str, str], *, timeout: float = 90, check: bool = True
) -> subprocess.CompletedProcess:
    """Run the real ``foundation`` CLI (``python -m foundation_cli``) in a subprocess."""
    proc = subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args],
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"foundation {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def ps(env: Mapping[str, str], name: str | None = None) -> list[dict]:
    """``foundation ps [NAME] --json``; raises if the command fails or prints something that is not a list."""
    rows = json.loads(cli(["ps", *([name] if name else []), "--json"], env).stdout)
    if not isinstance(rows, list):
        raise AssertionError(f"ps --json printed {type(rows).__name__}, expected a list")
    return rows


def http_json(url: str, timeout: float = 2.0):
    """GET a Consul endpoint and decode it. A 404 (absent key) is None; any other failure raises."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise AssertionError(f"GET {url}: HTTP {exc.code} {exc.read()[:200]!r}") from None


def agent_env(consul_addr: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env["CONSUL_HTTP_ADDR"] = consul_addr
    env.update(extra)
    return env


def start_local_agent(consul_addr: str, data_dir: Path, log_path: Path, **extra: str) -> subprocess.Popen:
    """``python3 -m foundation_cli agent run`` as a local process (its own session: killable as a group)."""
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "foundation_cli", "agent", "run"],
            env=agent_env(consul_addr, FOUNDATION_DATA_DIR=str(data_dir), **extra),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    finally:
        log.close()


def agent_passing(consul_addr: str, node: str | None = None) -> list[str]:
    """Nodes whose foundation-agent service is registered and passing."""
    entries = http_json(f"{consul_addr}/v1/health/service/foundation-agent?passing=1")
    if not isinstance(entries, list):
        raise AssertionError(f"/v1/health/service/foundation-agent answered {entries!r}")
    nodes = [e["Node"]["Node"] for e in entries]
    return [n for n in nodes if node is None or n == node]


def stop_process(proc: subprocess.Popen | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def pids_running(pattern: str) -> list[int]:
    """Pids whose command line contains ``pattern`` (our unique witness path)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        if pattern in cmdline and stat.rsplit(")", 1)[-1].split()[0] != "Z":
            out.append(int(entry))
    return out
