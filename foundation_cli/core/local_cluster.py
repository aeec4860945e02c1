"""The local one-node cluster (``foundation up --local``): one Consul server and the node agent, here.

Everything lives in one data dir (``$FOUNDATION_DATA_DIR``, else
``$XDG_DATA_HOME/foundation/local``): the Consul config and data, pid files and
logs. Both processes are started in the background the way an operator would
(``nohup … & echo $! > pidfile``), run through bash so the recorded
``local-process`` operation is exactly what ran. No discovery, no multicast:
Consul binds to 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from foundation_cli.core import cluster_state, keys
from foundation_cli.errors import ConflictError, FoundationError, UnreachableError, UsageError
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import Recorder, current_recorder

DEFAULT_HTTP_PORT = 8500
AGENT_SERVICE = keys.AGENT_SERVICE
"""The Consul service name the node agent registers for itself (issue 4's agent)."""

Progress = Callable[[str], None]


def data_dir() -> Path:
    """Where the local cluster keeps everything (``FOUNDATION_DATA_DIR`` wins, for tests)."""
    explicit = os.environ.get("FOUNDATION_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "foundation" / "local"


def ports_for(http_port: int) -> dict[str, int]:
    """Consul ports for a local cluster: the standard ones at 8500, else http+1/+2 (serf_wan, dns, grpc off)."""
    if http_port == DEFAULT_HTTP_PORT:
        server, serf = 8300, 8301
    else:
        server, serf = http_port + 1, http_port + 2
    return {"http": http_port, "server": server, "serf_lan": serf, "serf_wan": -1, "dns": -1, "grpc": -1}


def node_name() -> str:
    """This machine's Consul node name: its hostname as a DNS label."""
    raw = socket.gethostname().split(".")[0].lower()
    clean = "".join(c if c.isalnum() else "-" for c in raw).strip("-")
    return clean or "local"


@dataclass
class LocalLayout:
    root: Path

    @property
    def config_dir(self) -> Path:
        return self.root / "consul.d"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "consul.json"

    @property
    def consul_data(self) -> Path:
        return self.root / "consul-data"

    def pid(self, name: str) -> Path:
        return self.root / f"{name}.pid"

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"


@dataclass
class LocalResult:
    """What ``up --local`` / ``down --local`` did, per component."""

    http_addr: str
    data_dir: str
    cluster_id: str | None = None
    datacenter: str = "dc1"
    components: dict[str, str] = field(default_factory=dict)  # name -> started|unchanged|restarted|stopped|…
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(v not in ("unchanged", "not running") for v in self.components.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "http_addr": self.http_addr,
            "data_dir": self.data_dir,
            "cluster_id": self.cluster_id,
            "datacenter": self.datacenter,
            "components": self.components,
            "changed": self.changed,
            "warnings": self.warnings,
        }


def consul_config(layout: LocalLayout, *, http_port: int, datacenter: str, extra: dict | None = None) -> dict:
    """The local server's agent config (loopback only, update check off)."""
    from foundation_cli.core.cluster_config import merge_consul

    ours = {
        "datacenter": datacenter,
        "node_name": node_name(),
        "server": True,
        "bootstrap_expect": 1,
        "bind_addr": "127.0.0.1",
        "advertise_addr": "127.0.0.1",
        "client_addr": "127.0.0.1",
        "data_dir": str(layout.consul_data),
        "disable_update_check": True,
        "log_level": "INFO",
        "ports": ports_for(http_port),
        "performance": {"raft_multiplier": 1},
        "leave_on_terminate": False,
    }
    return merge_consul(ours, extra or {})


# --------------------------------------------------------------------------------------------
# Processes


def pid_alive(pid: int | None, needle: str | None = None) -> bool:
    """Whether ``pid`` runs (not a zombie) and, if given, its command line contains ``needle``."""
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        if state in ("Z", "X"):
            return False
        if needle:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                if needle.encode() not in fh.read():
                    return False
        return True
    except (OSError, IndexError):
        return False


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _run_local(argv: list[str], recorder: Recorder, *, timeout: float = 30.0) -> subprocess.CompletedProcess | None:
    """Run ``argv`` (recorded as a local-process op); in a dry run, record only."""
    op = RawOperation(kind="local-process", argv=list(argv))
    if recorder.dry_run:
        op.dry_run = True
        op.finish(summary="not run (dry run)")
        recorder.add(op)
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, start_new_session=True)
    except (OSError, subprocess.TimeoutExpired) as exc:
        op.finish(error=str(exc))
        recorder.add(op)
        raise FoundationError(f"could not run {argv[0]}: {exc}") from None
    op.finish(status=proc.returncode, summary=(proc.stdout.strip().splitlines() or [""])[-1][:80])
    recorder.add(op)
    return proc


def spawn_script(argv: list[str], *, pid_file: Path, log_file: Path, env: dict[str, str] | None = None) -> str:
    """The bash line that starts ``argv`` detached, logging to ``log_file`` and writing ``pid_file``."""
    env_words = " ".join(f"{k}={shlex.quote(v)}" for k, v in (env or {}).items())
    cmd = " ".join(shlex.quote(a) for a in argv)
    prefix = f"env {env_words} " if env_words else ""
    return (
        f"nohup setsid {prefix}{cmd} >>{shlex.quote(str(log_file))} 2>&1 </dev/null & "
        f"echo $! >{shlex.quote(str(pid_file))}"
    )


def write_file(path: Path, content: str, recorder: Recorder, *, mode: int = 0o644, secret: bool = False) -> None:
    """Write a local file with its final ``mode`` from the first byte (umask 077, O_EXCL temp, rename),
    recorded as the equivalent shell command; a ``secret`` file's content is never recorded. Not
    written in a dry run."""
    q = shlex.quote
    if secret:
        script = f"umask 077 && mkdir -p {q(str(path.parent))} && cat >{q(str(path))}  # (secret on stdin)"
    else:
        script = (
            f"umask 077 && mkdir -p {q(str(path.parent))} && printf '%s' {q(content)} >{q(str(path))}"
            f" && chmod {mode:o} {q(str(path))}"
        )
    op = RawOperation(kind="local-process", argv=["bash", "-c", script])
    if recorder.dry_run:
        op.dry_run = True
        op.finish(summary="not written (dry run)")
        recorder.add(op)
        return
    path.parent.mkdir(parents=True, exist_ok=True, **({"mode": 0o700} if secret else {}))
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(content)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    op.finish(status=0, summary=f"written ({mode:04o})" if secret else f"{len(content)} bytes")
    recorder.add(op)


def write_secret(path: Path, content: str, recorder: Recorder) -> None:
    """A secret file: 0600, its content never recorded."""
    write_file(path, content, recorder, mode=0o600, secret=True)


def stop_pid(pid_file: Path, needle: str, recorder: Recorder, *, timeout: float = 15.0) -> bool:
    """SIGTERM the process in ``pid_file`` (SIGKILL after ``timeout``); False when it was not running."""
    pid = read_pid(pid_file)
    if not pid_alive(pid, needle):
        if not recorder.dry_run:
            pid_file.unlink(missing_ok=True)
        return False
    op = RawOperation(kind="local-process", argv=["kill", "-TERM", str(pid)])
    if recorder.dry_run:
        op.dry_run = True
        op.finish(summary="not run (dry run)")
        recorder.add(op)
        return True
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        op.summary = "killed after timeout"
    op.finish(status=0, summary=op.summary or "stopped")
    recorder.add(op)
    pid_file.unlink(missing_ok=True)
    return True


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


# --------------------------------------------------------------------------------------------
# up / down


def _consul_binary(explicit: str | None) -> str:
    path = shutil.which(explicit or "consul")
    if not path:
        raise UsageError(
            f"consul binary not found: {explicit or 'consul'}",
            hint="install Consul (scripts/install-consul.sh) or pass --consul-binary PATH",
        )
    return path


def up(
    *,
    http_port: int = DEFAULT_HTTP_PORT,
    datacenter: str = "dc1",
    consul_binary: str | None = None,
    consul_extra: dict | None = None,
    python: str | None = None,
    timeout: float = 60.0,
    progress: Progress | None = None,
    token: str | None = None,
) -> LocalResult:
    """Start (or confirm) the local one-node cluster; idempotent.

    ACLs are on (deny by default) unless ``consul_extra`` turns them off: the management token
    (``token`` when Consul accepts it, else the state file's, else a fresh bootstrap) goes to the
    state file only; Consul and the node agent get their own narrow tokens (:mod:`.acl`).
    """
    from foundation_cli.core import acl

    say = progress or (lambda _msg: None)
    recorder = current_recorder()
    layout = LocalLayout(data_dir())
    addr = f"http://127.0.0.1:{http_port}"
    result = LocalResult(http_addr=addr, data_dir=str(layout.root), datacenter=datacenter)
    binary = _consul_binary(consul_binary)
    previous = cluster_state.load() or {}
    acl_on = ((consul_extra or {}).get("acl") or {}).get("enabled", True) is not False
    tokens = acl.node_tokens(previous.get("node_tokens"), node_name()) if acl_on else None
    acl_extra = {"acl": acl.config_block(agent_token=tokens.consul)} if tokens else {}

    config = consul_config(
        layout, http_port=http_port, datacenter=datacenter, extra={**acl_extra, **(consul_extra or {})}
    )
    text = json.dumps(config, indent=2, sort_keys=True) + "\n"
    consul_pid = read_pid(layout.pid("consul"))
    consul_running = pid_alive(consul_pid, "consul")
    try:
        old_text = layout.config_file.read_text(encoding="utf-8")
    except OSError:
        old_text = None

    if not consul_running:
        for name, port in ports_for(http_port).items():
            if port > 0 and port_open("127.0.0.1", port):
                raise ConflictError(
                    f"port {port} ({name}) on 127.0.0.1 is in use by something that is not Foundation's local cluster",
                    hint=f"stop it, or choose another port: foundation up --local --http-port {http_port + 100}",
                )
    config_changed = old_text != text
    if config_changed:
        say("writing consul config")
        layout.consul_data.mkdir(parents=True, exist_ok=True) if not recorder.dry_run else None
        write_file(layout.config_file, text, recorder, mode=0o600)  # holds the agent's ACL token

    if consul_running and config_changed:
        say("config changed: restarting consul")
        stop_pid(layout.pid("consul"), "consul", recorder)
        consul_running = False
        result.components["consul"] = "restarted"
    if not consul_running:
        say("starting consul")
        argv = [binary, "agent", f"-config-dir={layout.config_dir}"]
        layout.root.mkdir(parents=True, exist_ok=True) if not recorder.dry_run else None
        _run_local(
            ["bash", "-c", spawn_script(argv, pid_file=layout.pid("consul"), log_file=layout.log("consul"))],
            recorder,
        )
        result.components.setdefault("consul", "started")
    else:
        result.components["consul"] = "unchanged"

    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    client = consul_tool.connect(Settings(consul_addr=addr), recorder=recorder)
    if recorder.dry_run:
        _record_wait(addr, recorder)
    else:
        say("waiting for a leader")
        _wait_leader(addr, layout, timeout=timeout)
    mgmt = snapshot_token = None
    if tokens:
        say("ACLs: bootstrap and tokens")
        mgmt = _acl_setup(
            client,
            layout,
            tokens,
            datacenter,
            known=[token, previous.get("token")],
            result=result,
            fresh=recorder.dry_run and not consul_running,
        )
        client = consul_tool.connect(Settings(consul_addr=addr, token=mgmt), recorder=recorder)
        # The one node is a server: its agent takes the scheduled snapshots with a snapshot token (acl.py).
        snapshot_token = acl.snapshot_token(previous if previous.get("mode") == "local" else None)
        acl.ensure_snapshot_token(
            client, mgmt, snapshot_token, dry_run=recorder.dry_run, fresh=recorder.dry_run and not consul_running
        )

    # The cluster record: reuse the id the cluster already has.
    cluster_id = None
    existing = None
    if not recorder.dry_run or consul_running:
        _idx, entry = client.kv.get(keys.CLUSTER)
        if entry and entry.get("Value"):
            try:
                existing = json.loads(entry["Value"])
                cluster_id = existing.get("cluster_id")
            except ValueError:
                existing = None
    cluster_id = cluster_id or str(uuid.uuid4())
    record = {
        "cluster_id": cluster_id,
        "datacenter": datacenter,
        "mode": "local",
        "servers": ["127.0.0.1"],
        "http_addr": addr,
    }
    if existing != record:
        client.kv.put(keys.CLUSTER, json.dumps(record, sort_keys=True))
        result.components["cluster record"] = "written"
    else:
        result.components["cluster record"] = "unchanged"
    result.cluster_id = cluster_id

    _agent_up(
        layout,
        addr,
        result,
        recorder,
        python=python,
        say=say,
        agent_token=tokens.agent if tokens else None,
        snapshot_token=snapshot_token,
    )

    if not recorder.dry_run:
        state = {
            "cluster_id": cluster_id,
            "consul_http_addr": addr,
            "datacenter": datacenter,
            "mode": "local",
            "servers": ["127.0.0.1"],
            "local_data_dir": str(layout.root),
        }
        if tokens and mgmt:
            state["token"] = mgmt
            state["node_tokens"] = {node_name(): tokens.to_dict()}
            state["snapshot_token"] = snapshot_token
        if cluster_state.load() != state:
            cluster_state.save(state)
    return result


def _acl_setup(
    client, layout: LocalLayout, tokens, datacenter: str, *, known: list, result: LocalResult, fresh: bool = False
) -> str:
    """Management token (a known valid one, else bootstrap; the local data dir is ours to reset) + node tokens."""
    from foundation_cli.core import acl

    dry = current_recorder().dry_run
    candidates = [t for t in known if t] or [None]
    mgmt = None
    for candidate in candidates:
        try:
            mgmt, made = acl.bootstrap(client, known=candidate, dry_run=dry, fresh=fresh)
            break
        except acl.BootstrapRefused as exc:
            if candidate is not candidates[-1]:
                continue
            if not exc.reset_index:
                raise
            # Our own one-node cluster whose management token was lost: reset and bootstrap again.
            reset = layout.consul_data / acl.BOOTSTRAP_RESET_FILE
            write_file(reset, exc.reset_index + "\n", current_recorder(), mode=0o600)
            mgmt, made = acl.bootstrap(client, known=None, dry_run=dry)
            result.warnings.append("the management token was not in the state file: ACLs re-bootstrapped")
    assert mgmt is not None
    result.components["acl"] = "bootstrapped" if made else "unchanged"
    if acl.ensure_node(client, mgmt, node=node_name(), datacenter=datacenter, tokens=tokens, dry_run=dry, fresh=fresh):
        result.components["acl"] = "bootstrapped" if made else "tokens created"
    return mgmt


def _agent_up(
    layout: LocalLayout,
    addr: str,
    result: LocalResult,
    recorder: Recorder,
    *,
    python,
    say,
    agent_token=None,
    snapshot_token=None,
) -> None:
    pid_file = layout.pid("agent")
    env = {"CONSUL_HTTP_ADDR": addr, "FOUNDATION_NODE": node_name()}
    token_changed = False
    for token, name, var in (
        (agent_token, "agent.token", "CONSUL_HTTP_TOKEN_FILE"),
        (snapshot_token, "snapshot.token", "FOUNDATION_SNAPSHOT_TOKEN_FILE"),
    ):
        if not token:
            continue
        token_file = layout.root / name
        env[var] = str(token_file)
        try:
            changed = token_file.read_text().strip() != token
        except OSError:
            changed = True
        if changed:
            write_secret(token_file, token + "\n", recorder)
        token_changed |= changed
    if pid_alive(read_pid(pid_file), "foundation_cli"):
        if not token_changed:
            result.components["agent"] = "unchanged"
            return
        say("the agent's token changed: restarting the node agent")
        stop_pid(pid_file, "foundation_cli", recorder)
    say("starting the node agent")
    argv = [python or sys.executable, "-m", "foundation_cli", "agent", "run"]
    _run_local(["bash", "-c", spawn_script(argv, pid_file=pid_file, log_file=layout.log("agent"), env=env)], recorder)
    result.components["agent"] = "started"
    if recorder.dry_run:
        return
    say("waiting for the agent to register")
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    quiet = Recorder()
    client = consul_tool.connect(Settings(consul_addr=addr, token=agent_token), recorder=quiet, timeout=5)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if not pid_alive(read_pid(pid_file), "foundation_cli"):
            tail = _tail(layout.log("agent"))
            result.components["agent"] = "exited"
            result.warnings.append(f"the node agent exited right after starting: {tail} (log: {layout.log('agent')})")
            return
        try:
            services = client.agent.services()
        except Exception:  # noqa: BLE001 - a transient answer while starting
            services = {}
        if any(s.get("Service") == AGENT_SERVICE for s in services.values()):
            if quiet.operations:
                recorder.add(quiet.operations[-1])
            return
        time.sleep(0.2)
    result.warnings.append(f"the node agent runs but has not registered as {AGENT_SERVICE!r} yet")


def _tail(path: Path, lines: int = 1) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    useful = [line.strip(" │╭╮╰╯─\t") for line in text]
    useful = [line for line in useful if any(c.isalnum() for c in line)]
    return " / ".join(useful[-lines:]) or "(empty log)"


def _record_wait(addr: str, recorder: Recorder) -> None:
    """In a dry run, the wait for a leader as the shell loop that does it (so the script replays)."""
    loop = f"for i in $(seq 300); do curl -sf {addr}/v1/status/leader | grep -q ':' && break; sleep 0.2; done"
    op = RawOperation(kind="local-process", argv=["bash", "-c", loop], dry_run=True)
    op.finish(summary="not run (dry run)")
    recorder.add(op)


def _wait_leader(addr: str, layout: LocalLayout, *, timeout: float) -> str:
    """Poll ``/v1/status/leader`` (only the final answer is recorded) until there is a leader."""
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    quiet = Recorder()
    client = consul_tool.connect(Settings(consul_addr=addr), recorder=quiet, timeout=2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            leader = client.status.leader()
        except Exception:  # noqa: BLE001 - not up yet
            leader = ""
        if leader:
            current_recorder().add(quiet.operations[-1])
            return leader
        if not pid_alive(read_pid(layout.pid("consul")), "consul"):
            raise FoundationError(
                f"consul exited while starting: {_tail(layout.log('consul'), 2)}",
                hint=f"full log: {layout.log('consul')}",
            )
        time.sleep(0.2)
    raise UnreachableError(f"no Consul leader at {addr} after {timeout:.0f} s", hint=f"log: {layout.log('consul')}")


def down(*, purge: bool = False, progress: Progress | None = None) -> LocalResult:
    """Stop the local agent and Consul; ``purge`` also removes the data dir and the state file."""
    say = progress or (lambda _msg: None)
    recorder = current_recorder()
    layout = LocalLayout(data_dir())
    state = cluster_state.load() or {}
    addr = state.get("consul_http_addr") if state.get("mode") == "local" else None
    result = LocalResult(http_addr=addr or "", data_dir=str(layout.root))
    say("stopping the node agent")
    result.components["agent"] = (
        "stopped" if stop_pid(layout.pid("agent"), "foundation_cli", recorder) else "not running"
    )
    say("stopping consul")
    result.components["consul"] = "stopped" if stop_pid(layout.pid("consul"), "consul", recorder) else "not running"
    ours = state.get("mode") == "local" and state.get("local_data_dir") == str(layout.root)
    if ours and purge and not recorder.dry_run:
        cluster_state.clear()
    if purge and layout.root.exists():
        _run_local(["rm", "-rf", "--", str(layout.root)], recorder)
        result.components["data"] = "removed"
    return result
