"""One host's bring-up over SSH: probe → consul binary → consul config → consul service → agent.

Every step compares what the host has with what it should have and only
writes the difference, so a re-run says "unchanged". Each step is built from
the SSH adapter's recorded ``run``/``upload`` calls, so ``--dry-run`` shows
exactly these commands and uploads and ``--explain`` shows them as they run.

Paths on a host (the same on every machine, nothing test-specific):

    /etc/foundation/consul.d/foundation.json   Consul agent config
    /var/lib/foundation/consul                 Consul data dir
    /opt/foundation/bin/consul                 uploaded consul (when the host has none)
    /opt/foundation/agent/lib                  the node agent (this package + deps)
    /run/foundation/{consul,agent}.pid         supervisor pid files (no systemd)
    /var/log/foundation/{consul,agent}.log     logs (no systemd)
    /etc/systemd/system/foundation-{consul,agent}.service   (systemd hosts)
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from foundation_cli.core.fanout import for_each
from foundation_cli.errors import FoundationError
from foundation_cli.tools.ssh import Connection

ETC_DIR = "/etc/foundation"
VAR_LIB_DIR = "/var/lib/foundation"
CONFIG_DIR = "/etc/foundation/consul.d"
CONFIG_FILE = f"{CONFIG_DIR}/foundation.json"
DATA_DIR = "/var/lib/foundation/consul"
RUN_DIR = "/run/foundation"
LOG_DIR = "/var/log/foundation"
UNIT_DIR = "/etc/systemd/system"
AGENT_TOKEN_FILE = "/etc/foundation/agent.token"
# Servers only: the token the node agent takes scheduled snapshots with (read each round, no restart needed).
SNAPSHOT_TOKEN_FILE = "/etc/foundation/snapshot.token"
MIN_CONSUL = (1, 8, 0)
# A Consul node name Foundation writes into configs, unit files and environments: a DNS label.
NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]{0,62}$")


def valid_node_name(name: str) -> bool:
    """Whether ``name`` is a DNS label (what ``foundation.yaml`` accepts for node_name)."""
    return bool(NODE_NAME_RE.match(name))


Progress = Callable[[str], None]


@dataclass
class Probe:
    """What a host has now (one read-only SSH command)."""

    os: str = ""
    arch: str = ""
    init: str = ""
    hostname: str = ""
    python: str = ""
    addr: str = ""
    uid: str = ""
    consul_path: str = ""
    consul_version: str = ""
    consul_running: bool = False
    agent_running: bool = False
    agent_sha: str = ""
    config: str | None = None

    @property
    def systemd(self) -> bool:
        return self.init == "systemd"

    @property
    def consul_ok(self) -> bool:
        m = re.search(r"v(\d+)\.(\d+)\.(\d+)", self.consul_version)
        return bool(self.consul_path and m and tuple(int(x) for x in m.groups()) >= MIN_CONSUL)

    @property
    def existing_config(self) -> dict[str, Any]:
        try:
            data = json.loads(self.config or "")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}


PROBE_SCRIPT = r"""
echo "os=$(. /etc/os-release 2>/dev/null; echo "$ID-$VERSION_ID")"
echo "arch=$(uname -m)"
echo "init=$(cat /proc/1/comm 2>/dev/null)"
echo "hostname=$(hostname)"
echo "python=$(PY --version 2>&1 | sed -n 's/^Python \([0-9]*\.[0-9]*\).*/\1/p')"
echo "addr=$(echo "$SSH_CONNECTION" | cut -d' ' -f3)"
echo "uid=$(id -u)"
c=$(command -v consul || { [ -x INSTALL/bin/consul ] && echo INSTALL/bin/consul; })
echo "consul_path=$c"
echo "consul_version=$([ -n "$c" ] && "$c" version 2>/dev/null | head -1)"
# Running = our supervising loop is alive (its pid, not a reused one) AND the process it runs is there:
# a dead consul or agent is repaired by a plain `up`, not reported "unchanged".
running() {
  p=$(cat "$1" 2>/dev/null) && [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "foundation: $2 exited" || return 1
  if command -v pgrep >/dev/null 2>&1; then pgrep -g "$p" -f "$3" >/dev/null 2>&1 || return 1; fi
  echo yes
}
echo "consul_running=$(running RUN/consul.pid consul 'consul agent' || { systemctl is-active -q foundation-consul 2>/dev/null && echo yes; })"
echo "agent_running=$(running RUN/agent.pid agent 'foundation_cli.agent' || { systemctl is-active -q foundation-agent 2>/dev/null && echo yes; })"
echo "agent_sha=$(cat INSTALL/agent/.bundle-sha256 2>/dev/null)"
echo "--config--"
cat CONFIG 2>/dev/null
"""


def probe(conn: Connection, *, install_root: str, python: str) -> Probe:
    """Ask the host what it has (read-only: also runs in a dry run)."""
    q = shlex.quote
    script = (
        PROBE_SCRIPT.replace("INSTALL/bin/consul", q(f"{install_root}/bin/consul"))
        .replace("INSTALL/agent/.bundle-sha256", q(f"{install_root}/agent/.bundle-sha256"))
        .replace("RUN/", RUN_DIR + "/")
        .replace("CONFIG", CONFIG_FILE)
        .replace("PY ", shlex.quote(python) + " ")
        .strip()
    )
    # Sent as the multi-line script it is: --explain and --dry-run show it as a readable heredoc block.
    res = conn.run(f"sh -c {shlex.quote(script)}", write=False, timeout=60)
    head, _, config = res.stdout.partition("--config--\n")
    p = Probe(config=config if config.strip() else None)
    for line in head.splitlines():
        key, _, value = line.partition("=")
        if key in ("consul_running", "agent_running"):
            setattr(p, key, value.strip() == "yes")
        elif hasattr(p, key) and key != "config":
            setattr(p, key, value.strip())
    if not p.addr:
        p.addr = conn.target.hostname
    return p


MIN_PYTHON = (3, 9)


def preflight(p: Probe, plan: HostPlan) -> None:
    """Refuse a host the node agent cannot run on, before anything on it changes (one line + hint)."""
    py = plan.python
    if not p.python:
        raise FoundationError(
            f"{plan.alias}: no {py} on the host (the node agent needs CPython "
            f"{'.'.join(map(str, MIN_PYTHON))}+); nothing was changed",
            hint="install Python 3 there (Debian/Ubuntu: apt install python3; RHEL: dnf install python3), "
            "or set agent.python (or hosts[].python) to a 3.9+ interpreter",
        )
    try:
        version = tuple(int(x) for x in p.python.split(".")[:2])
    except ValueError:
        version = ()
    if not version or version < MIN_PYTHON:
        raise FoundationError(
            f"{plan.alias}: {py} is Python {p.python}, the node agent needs "
            f"{'.'.join(map(str, MIN_PYTHON))}+; nothing was changed",
            hint="install a newer python3 on the host and set agent.python (or hosts[].python) to it",
        )


@dataclass
class HostPlan:
    """What one host should end up with (computed by the orchestrator from the whole cluster)."""

    alias: str
    address: str
    node_name: str
    server: bool
    consul_config: dict[str, Any]
    install_root: str = "/opt/foundation"
    python: str = "python3"
    http_port: int = 8500
    agent_env: dict[str, str] = field(default_factory=dict)
    agent_token: str | None = None  # ACL token for the node agent, uploaded as a 0600 file
    # Secret and TLS files (path -> (content, mode)), written before Consul starts; see core/secure_up.py.
    files: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    # Files this host must not have (e.g. the snapshot token on a client): removed when present.
    remove_files: list[str] = field(default_factory=list)


@dataclass
class StepResult:
    step: str
    state: str  # unchanged | written | uploaded | started | restarted | failed | skipped
    detail: str = ""
    diff: str = ""


@dataclass
class HostResult:
    alias: str
    node_name: str = ""
    role: str = ""
    address: str = ""
    steps: list[StepResult] = field(default_factory=list)
    error: str | None = None
    exit_status: int = 0
    hint: str | None = None  # what to do about ``error``
    warnings: list[str] = field(default_factory=list)
    done: bool = False  # its own steps all ran (a run stopped by Ctrl-C reports the others unfinished)

    def fail(self, exc: BaseException) -> None:
        """Record why this host failed (a Foundation error's message, hint and exit status)."""
        if isinstance(exc, FoundationError):
            self.error, self.hint, self.exit_status = exc.message, exc.hint, int(exc.exit_status)
        else:
            self.error, self.exit_status = f"{type(exc).__name__}: {exc}", 1

    @property
    def state(self) -> str:
        if self.error:
            return "failed"
        changed = [s for s in self.steps if s.state not in ("unchanged", "skipped")]
        return "changed" if changed else "unchanged"

    def to_dict(self) -> dict[str, Any]:
        return {
            "host": self.alias,
            "node": self.node_name,
            "role": self.role,
            "address": self.address,
            "state": self.state,
            "error": self.error,
            "hint": self.hint,
            "steps": [s.__dict__ for s in self.steps],
            "warnings": self.warnings,
        }


def render_config(config: dict[str, Any]) -> str:
    return json.dumps(config, indent=2, sort_keys=True) + "\n"


def unified_diff(old: str | None, new: str, path: str) -> str:
    return "".join(
        difflib.unified_diff(
            (old or "").splitlines(keepends=True), new.splitlines(keepends=True), f"{path} (host)", f"{path} (new)"
        )
    )


def redacted_diff(old: str | None, new: str, path: str) -> str:
    """The config diff with every secret value (tokens, gossip key …) as ``****`` -- the host's old ones too.

    When only secret values changed, the diff says so instead of showing two equal masked lines.
    """
    from foundation_cli.raw.secrets import mask, redact

    def shown(text: str | None) -> str | None:
        if text is None:
            return None
        try:
            return render_config(redact(json.loads(text)))
        except ValueError:
            return mask(text)

    diff = unified_diff(shown(old), shown(new) or "", path)
    if not diff and old != new:
        diff = f"--- {path} (host)\n+++ {path} (new)\n# only secret values changed (not shown)\n"
    return diff


# ---------------------------------------------------------------------------------------------
# Steps


def ensure_consul(
    conn: Connection, p: Probe, plan: HostPlan, *, local_binary: Callable[[], bytes | None], say: Progress
) -> tuple[StepResult, str]:
    """Use the host's consul when it is recent enough, else upload ours (sha256 checked)."""
    if p.consul_ok:
        return StepResult("consul binary", "unchanged", f"{p.consul_path} ({p.consul_version})"), p.consul_path
    binary = local_binary()
    if binary is not None and p.arch:
        from foundation_cli.core import consul_binary

        if not consul_binary.fits(binary[:20], p.arch):
            raise FoundationError(
                f"{plan.alias}: the consul to upload is {consul_binary.describe(binary[:20])}, the host is {p.arch}",
                hint="name one per architecture in foundation.yaml: consul_binary: {amd64: PATH, arm64: PATH}",
            )
    if binary is None:
        raise FoundationError(
            f"{plan.alias}: no consul ≥ {'.'.join(map(str, MIN_CONSUL))} on the host and no local binary to upload",
            hint="install consul locally or pass --consul-binary PATH",
        )
    target = f"{plan.install_root}/bin/consul"
    digest = hashlib.sha256(binary).hexdigest()
    say(f"uploading consul ({len(binary) // (1 << 20)} MiB)")
    conn.upload(target, binary, mode=0o755)
    res = conn.run(f"sha256sum {shlex.quote(target)}", timeout=60)
    if not conn_dry(conn) and res.stdout.split()[:1] != [digest]:
        raise FoundationError(f"{plan.alias}: consul upload corrupted (sha256 mismatch)")
    return StepResult("consul binary", "uploaded", f"{target} sha256 {digest[:12]}"), target


def conn_dry(conn: Connection) -> bool:
    from foundation_cli.raw.recorder import current_recorder

    return current_recorder().dry_run


def write_consul_config(conn: Connection, p: Probe, plan: HostPlan) -> StepResult:
    text = render_config(plan.consul_config)
    if p.config == text:
        return StepResult("consul config", "unchanged", CONFIG_FILE)
    diff = redacted_diff(p.config, text, CONFIG_FILE)
    conn.run(f"mkdir -p {DATA_DIR} {RUN_DIR} {LOG_DIR} && chmod 700 {DATA_DIR}")
    conn.upload(CONFIG_FILE, text.encode(), mode=0o640)
    return StepResult("consul config", "written" if p.config else "created", CONFIG_FILE, diff=diff)


def _supervised_start(name: str, argv: list[str], env: dict[str, str]) -> str:
    """A detached shell loop that runs ``argv`` and restarts it if it exits; its pid (= process group) in a file."""
    env_words = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
    cmd = ("env " + env_words + " " if env_words else "") + " ".join(shlex.quote(a) for a in argv)
    loop = (
        f'echo $$ > {RUN_DIR}/{name}.pid; while :; do {cmd}; echo "foundation: {name} exited with $? at $(date)"; '
        "sleep 1; done"
    )
    return (
        f"mkdir -p {RUN_DIR} {LOG_DIR} && cd / && "
        f"(nohup setsid sh -c {shlex.quote(loop)} >>{LOG_DIR}/{name}.log 2>&1 </dev/null &) && "
        f"for i in $(seq 250); do [ -s {RUN_DIR}/{name}.pid ] && break; sleep 0.02; done"
    )


# Whether a process of group $p still runs. Not `kill -0 -- -$p`: that is true for zombies too, and an
# init that reaps slowly (seen: ~1.5 s) kept every stop waiting for exited processes. /proc/PID/stat
# after the last ')': state, ppid, pgrp; no ps needed (minimal Debian has none).
_GROUP_RUNNING = (
    "sed -n 's/^.*) \\([A-Za-z]\\) [0-9-]* \\([0-9]*\\) .*$/\\1 \\2/p' /proc/[0-9]*/stat 2>/dev/null"
    ' | grep -qx "[^ZX] $p"'
)


def _supervised_stop(name: str, *, before_kill: str = "") -> str:
    """Stop the loop first (so it does not restart the child), then the child's process group.

    Only when the pid file still names our loop: after a crash the kernel may have given that pid
    to anything (sshd, say), which must never be killed.
    """
    pid = f"{RUN_DIR}/{name}.pid"
    ours = f"tr '\\0' ' ' <\"/proc/$p/cmdline\" 2>/dev/null | grep -q 'foundation: {name} exited'"
    return (
        f'if [ -f {pid} ]; then p=$(cat {pid}); if [ -n "$p" ] && {ours}; then kill -TERM "$p" 2>/dev/null; {before_kill}'
        f'kill -TERM -- "-$p" 2>/dev/null; for i in $(seq 100); do {_GROUP_RUNNING} || break; sleep 0.1; done; '
        f'kill -KILL -- "-$p" 2>/dev/null; fi; rm -f {pid}; fi; true'
    )


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_UNIT_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _unit_value(what: str, value: str) -> str:
    """``value`` checked for a unit file line: a newline there would add directives of its own."""
    if _UNIT_CONTROL.search(value):
        raise FoundationError(
            f"{what} {ascii(value)[:80]} holds a control character (a newline would add unit directives)",
            hint="check foundation.yaml (agent.env, install_root, python) and the host's existing config",
        )
    return value.replace("%", "%%")  # systemd specifiers


def _unit_env_line(key: str, value: str) -> str:
    """``Environment="KEY=VALUE"``: quoted, ``\\`` and ``"`` escaped, ``%`` doubled, no control characters."""
    if not _ENV_NAME.match(key):
        raise FoundationError(f"invalid environment variable name {ascii(key)[:80]} for a unit file")
    value = _unit_value(f"environment value of {key}", value).replace("\\", "\\\\").replace('"', '\\"')
    return f'Environment="{key}={value}"\n'


def _exec_word(arg: str) -> str:
    # systemd expands $VAR in ExecStart even inside quotes: $$ is a literal dollar sign.
    return shlex.quote(_unit_value("command argument", arg)).replace("$", "$$")


def _unit(description: str, argv: list[str], env: dict[str, str]) -> str:
    env_lines = "".join(_unit_env_line(k, v) for k, v in env.items())
    return (
        f"[Unit]\nDescription={_unit_value('description', description)}\nAfter=network-online.target\n"
        "Wants=network-online.target\n\n"
        f"[Service]\nExecStart={' '.join(_exec_word(a) for a in argv)}\n{env_lines}"
        "Restart=on-failure\nRestartSec=1\nKillSignal=SIGTERM\n\n[Install]\nWantedBy=multi-user.target\n"
    )


def ensure_service(
    conn: Connection,
    p: Probe,
    *,
    name: str,
    description: str,
    argv: list[str],
    env: dict[str, str],
    running: bool,
    restart: bool,
) -> StepResult:
    """Start (or restart) a long-running process: a systemd unit, or a supervised background loop."""
    if running and not restart:
        return StepResult(name, "unchanged", "running")
    unit_name = f"foundation-{name}"
    if p.systemd:
        unit = _unit(description, argv, env)
        conn.upload(f"{UNIT_DIR}/{unit_name}.service", unit.encode())
        verb = "restart" if running else "start"
        # reset-failed: a unit that hit its start limit (crash loop) refuses a plain start for a while.
        conn.run(
            f"systemctl daemon-reload && systemctl reset-failed {unit_name} 2>/dev/null; "
            f"systemctl enable -q {unit_name} && systemctl {verb} {unit_name}"
        )
    else:
        # Also when not running: a loop whose process died (or a half-started one) goes first, never two.
        conn.run(_supervised_stop(name))
        conn.run(_supervised_start(name, argv, env))
    return StepResult(name, "restarted" if running else "started")


def install_agent(conn: Connection, p: Probe, plan: HostPlan, bundle, say: Progress) -> StepResult:
    """Upload and unpack the agent bundle unless the host already has this exact one."""
    if p.agent_sha == bundle.sha256:
        return StepResult("agent install", "unchanged", f"bundle {bundle.sha256[:12]}")
    if p.python and p.python != bundle.python or p.arch and p.arch != bundle.arch:
        detail = f"host python {p.python or '?'} / {p.arch}, bundle built for {bundle.python} / {bundle.arch}"
    else:
        detail = f"bundle {bundle.sha256[:12]} ({bundle.size // 1024} KiB)"
    if getattr(bundle, "missing", None):
        detail += f"; without {', '.join(bundle.missing)} (none for Python {bundle.python}): no mDNS on this host"
    say(f"uploading the node agent ({bundle.size // 1024} KiB)")
    root = plan.install_root
    tarball = f"{root}/agent/bundle.tar.gz"
    conn.upload(tarball, bundle.path.read_bytes(), mode=0o644)
    conn.run(
        f"set -e; cd {shlex.quote(root + '/agent')}; echo {shlex.quote(bundle.sha256 + '  bundle.tar.gz')} "
        "| sha256sum -c --quiet; "
        "rm -rf lib.new; mkdir lib.new; tar -xzf bundle.tar.gz -C lib.new; rm -rf lib; mv lib.new lib; "
        f"echo {shlex.quote(bundle.sha256)} > .bundle-sha256",
        timeout=300,
    )
    return StepResult("agent install", "installed" if not p.agent_sha else "updated", detail)


def agent_argv(plan: HostPlan) -> list[str]:
    """The agent's own entry (argparse; no Typer/click): it runs on the host's Python, 3.9 and up."""
    return [plan.python, "-m", "foundation_cli.agent"]


def agent_env(plan: HostPlan) -> dict[str, str]:
    env = {
        "PYTHONPATH": f"{plan.install_root}/agent/lib",
        "CONSUL_HTTP_ADDR": f"http://127.0.0.1:{plan.http_port}",
        "FOUNDATION_NODE": plan.node_name,
    }
    env.update(plan.agent_env)
    return env


def apply(
    conn: Connection,
    p: Probe,
    plan: HostPlan,
    *,
    local_binary: Callable[[], bytes | None],
    bundle,
    say: Progress,
    around_consul: tuple[Callable[[], None], Callable[[], None]] | None = None,
    steps: list[StepResult] | None = None,
    agent_first: bool = False,
) -> list[StepResult]:
    """Bring one host to its plan; returns what each step did.

    ``steps``: a list to append each step to as it is done (so a host that fails half-way, e.g. its
    SSH connection lost, still shows what was changed on it); returned.

    ``around_consul``: ``(before, after)`` called right before and after Consul is (re)started (the
    orchestrator holds a new client there until the servers know its ACL token). ``agent_first``:
    install and start the node agent before that: a client waiting for its token spends the wait on
    the upload and on the agent's own start (imports: ~0.15 s of CPU), which then polls until its
    Consul listens (agent/runner.wait_listening) and registers at once. Its first request reaches
    Consul only after the token exists: a client's Consul would remember an unknown token for 30 s.

    ``bundle`` is the agent bundle, or a callable ``(python, arch) -> bundle`` choosing the one for
    this host (:class:`foundation_cli.core.agent_bundle.Selector`). A host the agent cannot run on,
    or for which there is no bundle, is refused before anything on it changes.
    """
    preflight(p, plan)
    if callable(bundle):
        bundle = bundle(p.python, p.arch)
    steps = [] if steps is None else steps
    say("consul binary")
    step, consul_path = ensure_consul(conn, p, plan, local_binary=local_binary, say=say)
    steps.append(step)
    say("secrets")
    files_step, changed_files = write_files(conn, plan)
    if files_step:
        steps.append(files_step)
    say("consul config")
    cfg_step = write_consul_config(conn, p, plan)
    steps.append(cfg_step)
    inst = None
    if agent_first:
        say("node agent")
        inst = install_agent(conn, p, plan, bundle, say)
        steps.append(inst)
        steps.append(_ensure_agent(conn, p, plan, inst, changed_files))
    say("consul service")
    if around_consul:
        around_consul[0]()
    steps.append(
        ensure_service(
            conn,
            p,
            name="consul",
            description="Consul agent (Foundation)",
            argv=[consul_path, "agent", f"-config-dir={CONFIG_DIR}"],
            env={},
            running=p.consul_running,
            restart=cfg_step.state != "unchanged"
            or step.state != "unchanged"
            or any(f not in (AGENT_TOKEN_FILE, SNAPSHOT_TOKEN_FILE) for f in changed_files),
        )
    )
    if around_consul:
        around_consul[1]()
    if inst is None:
        say("node agent")
        inst = install_agent(conn, p, plan, bundle, say)
        steps.append(inst)
        steps.append(_ensure_agent(conn, p, plan, inst, changed_files))
    return steps


def _ensure_agent(conn: Connection, p: Probe, plan: HostPlan, inst: StepResult, changed_files: list[str]) -> StepResult:
    """The node agent's service, restarted when its bundle or its token changed."""
    return ensure_service(
        conn,
        p,
        name="agent",
        description="Foundation node agent",
        argv=agent_argv(plan),
        env=agent_env(plan),
        running=p.agent_running,
        restart=inst.state != "unchanged" or AGENT_TOKEN_FILE in changed_files,
    )


def write_files(conn: Connection, plan: HostPlan) -> tuple[StepResult | None, list[str]]:
    """Upload the plan's secret/TLS files whose sha256 differs on the host (never read back).

    One read-only ``sha256sum`` tells what the host has, so a token or key on the host is never
    printed by ``--explain``; each upload is made with its final mode from the first byte.
    """
    if not plan.files and not plan.remove_files:
        return None, []
    paths = sorted(plan.files)
    listed = paths + sorted(set(plan.remove_files) - set(paths))
    res = conn.run("sha256sum " + " ".join(shlex.quote(x) for x in listed) + " 2>/dev/null; true", write=False)
    have = {}
    for line in res.stdout.splitlines():
        digest, _, path = line.strip().partition("  ")
        have[path] = digest
    changed = [x for x in paths if have.get(x) != hashlib.sha256(plan.files[x][0]).hexdigest()]

    def upload(path: str) -> None:
        content, mode = plan.files[path]
        conn.upload(path, content, mode=mode)

    # Side by side on the one connection (a channel each): a server's five files took five round trips
    # before its Consul could start. A dry run's script keeps them in order.
    for_each(changed, upload, parallel=1 if conn_dry(conn) else len(changed))
    gone = [x for x in listed[len(paths) :] if x in have]
    if gone:
        conn.run("rm -f " + " ".join(shlex.quote(x) for x in gone))
        changed += gone
    if not changed:
        return StepResult("secrets", "unchanged", f"{len(paths)} files"), []
    return StepResult("secrets", "written", ", ".join(changed)), changed


def stop_agent(conn: Connection, p: Probe) -> StepResult:
    """Stop the node agent first (it hands over what it runs while Consul is still there)."""
    if p.systemd:
        conn.run("systemctl disable --now -q foundation-agent 2>/dev/null; true")
    else:
        conn.run(_supervised_stop("agent"))
    return StepResult("agent", "stopped" if p.agent_running else "unchanged")


def stop_consul(
    conn: Connection, p: Probe, *, install_root: str, http_port: int, purge: bool, leave: bool = True
) -> list[StepResult]:
    """Leave the cluster gracefully, stop consul, remove services; purge deletes data too.

    ``leave=False`` (servers when the whole cluster goes down) stops Consul without leaving, so the
    servers keep their Raft peer set and a later ``up`` brings the same cluster back with its data.
    """
    steps = []
    consul = shlex.quote(p.consul_path or "consul")
    # With ACLs the leave needs agent:write: the node agent's token (its policy has it for its own node).
    token_env = f"[ -r {AGENT_TOKEN_FILE} ] && export CONSUL_HTTP_TOKEN_FILE={AGENT_TOKEN_FILE}; "
    leave_cmd = f"{token_env}{consul} leave -http-addr=http://127.0.0.1:{http_port} >/dev/null 2>&1; " if leave else ""
    if p.systemd:
        conn.run(
            (leave_cmd if p.consul_running else "")
            + "systemctl disable --now -q foundation-agent foundation-consul 2>/dev/null; "
            f"rm -f {UNIT_DIR}/foundation-agent.service {UNIT_DIR}/foundation-consul.service; "
            # reset-failed: systemd otherwise keeps a "not-found failed" unit in memory after the removal
            "systemctl daemon-reload; systemctl reset-failed foundation-agent foundation-consul 2>/dev/null; true"
        )
    else:
        conn.run(_supervised_stop("consul", before_kill=leave_cmd))
    done = "left and stopped" if leave else "stopped"
    steps.append(StepResult("consul", done if p.consul_running else "unchanged"))
    if purge:
        # Everything Foundation put there (config, tokens, TLS files, data, logs); the install root
        # only if nothing else is left in it (it may be shared).
        root = shlex.quote(install_root)
        conn.run(
            f"rm -rf {ETC_DIR} {VAR_LIB_DIR} {root}/agent {root}/bin/consul {LOG_DIR} {RUN_DIR}; "
            f"rmdir {root}/bin {root} 2>/dev/null; true"
        )
        steps.append(StepResult("data", "purged"))
    return steps


def teardown(
    conn: Connection, p: Probe, *, install_root: str, http_port: int, purge: bool, leave: bool = True
) -> list[StepResult]:
    """Agent, then Consul (see :func:`stop_consul`)."""
    return [stop_agent(conn, p)] + stop_consul(
        conn, p, install_root=install_root, http_port=http_port, purge=purge, leave=leave
    )
