"""The last step of ``up``: every host's Consul and node agent are running and registered, or it failed.

``up`` never reports success for a host whose consul or agent is not running: after the cluster
formed (or gave up forming), each host that nothing failed yet must be

- an alive member of the cluster (its Consul agent runs and joined), and
- registered as the node agent's service (``keys.AGENT_SERVICE``) from its node,

within a bounded wait (:data:`AGENT_WAIT` seconds; it ends early for a host whose service
systemd has given up on, or whose supervised process keeps exiting). A host that is not gets
``error`` naming what is missing and the service's last error lines from the host itself
(``journalctl -u foundation-<svc> -n 20`` under systemd, else ``/var/log/foundation/<svc>.log``)
in its ``warnings``; its ``exit_status`` is 7 (partial), so ``up`` exits non-zero.
"""

from __future__ import annotations

import shlex
import time
from typing import Any

from foundation_cli.core import bootstrap, keys
from foundation_cli.core.fanout import for_each
from foundation_cli.errors import ExitStatus

AGENT_WAIT = 60.0  # seconds after the cluster step for every agent to register
CHECK_EVERY = 4.0  # how often the hosts still missing are asked about their services (SSH)
LOG_LINES = 20


def _client(run: Any):
    from foundation_cli.raw.recorder import Recorder
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    result = run.result
    settings = Settings(consul_addr=result.http_addr, token=result.token, cacert=getattr(result, "cacert", None))
    return consul_tool.connect(settings, recorder=Recorder(), timeout=3)


def _state(client) -> tuple[set[str], set[str]]:
    """(alive member names, nodes whose node agent is registered with its checks passing); empty
    when Consul cannot be asked. (A registration alone outlives a crashed agent until its TTL runs out.)"""
    try:
        members = client.agent.members()
        _i, entries = client.health.service(keys.AGENT_SERVICE, passing=True)
    except Exception:  # noqa: BLE001 - a server restarting, an election: ask again
        return set(), set()
    passing = {n for e in entries if (n := (e.get("Node") or {}).get("Node"))}
    return {m["Name"] for m in members if m.get("Status") == 1}, passing


SERVICE_STATE = (
    "for s in consul agent; do "
    "if [ -d /run/systemd/system ]; then "
    'echo "$s=$(systemctl is-active foundation-$s 2>/dev/null) $(systemctl show -p NRestarts --value foundation-$s 2>/dev/null)"; '
    f'else p={bootstrap.RUN_DIR}/$s.pid; if [ -f "$p" ] && kill -0 "$(cat "$p")" 2>/dev/null; then '
    f'echo "$s=active $(grep -c "^foundation: $s exited" {bootstrap.LOG_DIR}/$s.log 2>/dev/null)"; '
    'else echo "$s=inactive 0"; fi; fi; done'
)


def service_states(conn) -> dict[str, tuple[str, int]]:
    """``{"consul": (state, restarts), "agent": …}`` from the host (systemd unit or supervised loop)."""
    res = conn.run(f"sh -c {shlex.quote(SERVICE_STATE)}", write=False, timeout=30)
    out: dict[str, tuple[str, int]] = {}
    for line in res.stdout.splitlines():
        name, _, rest = line.partition("=")
        state, _, restarts = rest.partition(" ")
        out[name.strip()] = (state.strip() or "unknown", int(restarts) if restarts.strip().isdigit() else 0)
    return out


def last_lines(conn, service: str, *, n: int = LOG_LINES) -> list[str]:
    """The service's last ``n`` log lines on the host (journal under systemd, else its log file)."""
    cmd = (
        f"if [ -d /run/systemd/system ]; then journalctl -u foundation-{service} -n {n} --no-pager -o cat 2>&1; "
        f"else tail -n {n} {bootstrap.LOG_DIR}/{service}.log 2>&1; fi"
    )
    try:
        res = conn.run(f"sh -c {shlex.quote(cmd)}", write=False, timeout=30)
    except Exception as exc:  # noqa: BLE001 - the host answered before; report what we can
        return [f"(could not read its log: {exc})"]
    return [line for line in res.stdout.splitlines() if line.strip()][-n:]


def _gave_up(state: tuple[str, int] | None) -> bool:
    """systemd stopped restarting it, or it is between restarts after ≥ 3: waiting longer will not help."""
    if state is None:
        return False
    active, restarts = state
    return active in ("failed", "inactive") or (active == "activating" and restarts >= 3)


def verify_hosts(run: Any, *, wait: float = AGENT_WAIT) -> None:
    """Fail every host whose Consul is not an alive member or whose agent is not registered (see module)."""
    if run.dry_run:
        return
    pending = {a: p.node_name for a, p in run.plans.items() if not run.results[a].error}
    if not pending:
        return
    if not run.result.http_addr:
        for addr in pending:
            _fail(run, addr, "consul", "no Consul server of this cluster is up to confirm it joined")
        return
    run.say("cluster", "checking every host's consul and node agent")
    client = _client(run)
    deadline = time.monotonic() + wait
    next_check = time.monotonic() + CHECK_EVERY
    given_up: dict[str, str] = {}
    while True:
        alive, registered = _state(client)
        missing = {a: n for a, n in pending.items() if a not in given_up and not (n in alive and n in registered)}
        if not missing or time.monotonic() > deadline:
            break
        if time.monotonic() >= next_check:
            next_check = time.monotonic() + CHECK_EVERY
            for_each(list(missing), lambda addr: _note_given_up(run, addr, given_up), parallel=run.parallel)
        time.sleep(0.1)
    alive, registered = _state(client)

    def confirm(addr: str) -> None:
        node = pending[addr]
        if addr not in given_up and node in alive and node in registered:
            # Consul says yes; the host confirms both services run now (not a crash loop between restarts).
            try:
                states = service_states(run.conns[addr]) if addr in run.conns else {}
            except Exception:  # noqa: BLE001 - it answered a moment ago; Consul's word stands
                states = {}
            down = [svc for svc in ("consul", "agent") if states.get(svc, ("active", 0))[0] != "active"]
            if down:
                _fail(run, addr, down[0], f"{down[0]} is {states[down[0]][0]} on the host")
            return
        svc = given_up.get(addr) or ("consul" if node not in alive else "agent")
        what = (
            f"consul is not running as an alive member ({node})"
            if svc == "consul"
            else f"the node agent is not running/registered as {keys.AGENT_SERVICE!r} on {node}"
        )
        _fail(run, addr, svc, what)

    for_each(list(pending), confirm, parallel=run.parallel)  # one SSH round trip per host, side by side


def _note_given_up(run: Any, addr: str, given_up: dict[str, str]) -> None:
    """Ask the host about its services; note one that systemd or its loop gave up on."""
    conn = run.conns.get(addr)
    try:
        states = service_states(conn) if conn else {}
    except Exception:  # noqa: BLE001 - checked again at the end
        return
    for svc in ("consul", "agent"):
        if _gave_up(states.get(svc)):
            given_up[addr] = svc
            return


def _fail(run: Any, addr: str, service: str, what: str) -> None:
    result = run.results[addr]
    conn = run.conns.get(addr)
    lines = last_lines(conn, service) if conn else []
    own = [ln for ln in lines if not _from_systemd(ln)] or lines
    cause = next((ln for ln in reversed(own) if _looks_like_error(ln)), own[-1] if own else "")
    result.error = what + (f": {cause.strip()}" if cause else "")
    result.exit_status = int(ExitStatus.PARTIAL)
    if lines:
        log = "journalctl -u foundation-" + service if _systemd(run, addr) else f"{bootstrap.LOG_DIR}/{service}.log"
        result.warnings.append(f"last {len(lines)} lines of {log}:\n  " + "\n  ".join(lines))
    run.say(addr, "failed")


def _systemd(run: Any, addr: str) -> bool:
    p = run.probes.get(addr)
    return bool(p and p.systemd)


_ERROR_WORDS = ("error", "Error", "ERROR", "failed", "No such file", "not found", "denied", "exited with")
_SYSTEMD_PREFIXES = ("foundation-", "Started ", "Stopped ", "Starting ", "Stopping ", "Failed to start ")


def _from_systemd(line: str) -> bool:
    """systemd's own lines about the unit (restarts, results), not the program's output."""
    return line.startswith(_SYSTEMD_PREFIXES)


def _looks_like_error(line: str) -> bool:
    return any(w in line for w in _ERROR_WORDS)
