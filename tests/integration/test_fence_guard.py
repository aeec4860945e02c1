"""The fence guard (agent/fence_guard.py) with real processes: a singleton stops when its lease runs out,
whether the agent is alive, frozen (SIGSTOP) or dead, and keeps running while the lease is renewed.

No Consul here: the "agent" is a small Python process that spawns an instance under a lease and
renews it the way the session thread does after each confirmation.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from foundation_cli.agent.supervisor import Instance, Lease, WarmGuard
from foundation_cli.core.service_spec import ServiceSpec
from tests.integration.test_placement_support import wait_for
from tests.lab.procs import pid_alive

# A stand-in agent: spawn `sleep` under a lease, print its pid, renew every 0.1 s until stopped.
AGENT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from foundation_cli.agent.supervisor import Instance, Lease
    from foundation_cli.core.service_spec import ServiceSpec
    inst = Instance(ServiceSpec(name="s", mode="singleton", command=["sleep", "300"]), Path(sys.argv[1]), "n")
    inst.spawn({}, lambda i: None, Lease(time.monotonic() + 1.0, 0.3))
    print(inst.pid, inst.pgid, flush=True)
    while True:
        time.sleep(0.1)
        inst.renew(time.monotonic() + 1.0)
    """
)


def _instance(tmp_path: Path, command: list[str]) -> Instance:
    return Instance(ServiceSpec(name="s", mode="singleton", command=command), tmp_path / "s", "n")


def _stand_in_agent(tmp_path: Path) -> tuple[subprocess.Popen, int, int]:
    proc = subprocess.Popen(
        [sys.executable, "-c", AGENT, str(tmp_path / "s")], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    pid, pgid = (int(x) for x in proc.stdout.readline().split())
    return proc, pid, pgid


def _cleanup(proc: subprocess.Popen, pgid: int) -> None:
    """Kill the stand-in agent (thawed first) and whatever is left of its singleton's group."""
    for sig in (signal.SIGCONT, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, sig)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    proc.wait(5)


def test_renewed_lease_keeps_it_running_and_an_expired_one_stops_it(tmp_path):
    inst = _instance(tmp_path, ["sleep", "300"])
    exited = threading.Event()
    inst.spawn({}, lambda i: exited.set(), Lease(time.monotonic() + 0.5, 0.2))
    try:
        assert inst.pid != inst.pgid  # the guard leads the group; pid is the command itself
        for _ in range(10):  # 1 s of renewals, twice the first lease
            time.sleep(0.1)
            inst.renew(time.monotonic() + 0.5)
        assert inst.alive() and pid_alive(inst.pid)
        assert exited.wait(10), "the guard must stop the process once the lease is not renewed"
        assert not pid_alive(inst.pid)
        assert "lease expired" in (inst.fence_fired() or "")
        assert "fence guard: lease expired" in inst.log_path.read_text()
    finally:
        inst.terminate(1.0)


def test_own_exit_status_passes_through_and_stop_is_not_a_fence(tmp_path):
    inst = _instance(tmp_path, ["sh", "-c", "exit 3"])
    exited = threading.Event()
    inst.spawn({}, lambda i: exited.set(), Lease(time.monotonic() + 30, 0.2))
    assert exited.wait(10) and inst.exit_code == 3 and inst.fence_fired() is None

    inst = _instance(tmp_path, ["sleep", "300"])
    inst.spawn({}, lambda i: None, Lease(time.monotonic() + 30, 0.2))
    child = inst.pid
    inst.terminate(2.0)
    assert not pid_alive(child) and inst.fence_fired() is None


def test_a_command_that_cannot_run_is_an_oserror(tmp_path):
    inst = _instance(tmp_path, [str(tmp_path / "no-such-program")])
    with pytest.raises(OSError) as err:
        inst.spawn({}, lambda i: None, Lease(time.monotonic() + 30, 0.2))
    assert err.value.errno == 2


def test_frozen_agent_loses_its_singleton_and_a_dead_one_too(tmp_path):
    # Frozen: SIGSTOP the agent; the guard (its own process) still stops the singleton.
    agent, pid, pgid = _stand_in_agent(tmp_path)
    try:
        time.sleep(0.5)
        assert pid_alive(pid)
        os.kill(agent.pid, signal.SIGSTOP)
        wait_for(lambda: not pid_alive(pid), 10, "the guard to stop the singleton of a frozen agent")
        assert pid_alive(agent.pid)  # the agent is still there, only frozen
        assert "lease expired" in (tmp_path / "s" / "fenced").read_text()
    finally:
        _cleanup(agent, pgid)

    # Dead: SIGKILL the agent; the lease pipe closes and the guard stops the singleton at once.
    agent, pid, pgid = _stand_in_agent(tmp_path)
    try:
        os.kill(agent.pid, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 10, "the guard to stop the singleton of a dead agent")
        assert "agent gone" in (tmp_path / "s" / "fenced").read_text()
    finally:
        _cleanup(agent, pgid)


def test_a_warm_guard_runs_the_command_with_its_late_environment_and_still_fences(tmp_path):
    """Started ahead (before the fencing token is known), it runs the command only when spawn sends it."""
    out = tmp_path / "token"
    command = ["sh", "-c", f'echo "$FOUNDATION_FENCING_TOKEN $MARK" > {out}; exec sleep 300']
    spec = ServiceSpec(name="s", mode="singleton", command=command, env={"MARK": "m"})
    warm = WarmGuard(spec, tmp_path / "s")
    time.sleep(0.3)
    assert warm.fits(spec) and not out.exists()  # waiting, nothing started
    inst = Instance(spec, tmp_path / "s", "n")
    exited = threading.Event()
    inst.spawn({"FOUNDATION_FENCING_TOKEN": "42"}, lambda i: exited.set(), Lease(time.monotonic() + 0.6, 0.2), warm)
    try:
        assert inst.proc is warm.proc and inst.pgid == warm.proc.pid != inst.pid
        wait_for(lambda: out.exists() and out.read_text().strip() == "42 m", 10, "the command's environment")
        warm.discard()  # taken by the instance: a no-op, the lease pipe stays open
        assert inst.alive()
        assert exited.wait(10), "an unrenewed lease stops it, as with a guard started at spawn"
        assert "lease expired" in (inst.fence_fired() or "")
    finally:
        inst.terminate(1.0)


def test_a_discarded_or_stale_warm_guard_starts_nothing(tmp_path):
    marker = tmp_path / "ran"
    spec = ServiceSpec(name="s", mode="singleton", command=["touch", str(marker)])
    warm = WarmGuard(spec, tmp_path / "s")
    warm.discard()
    wait_for(lambda: warm.proc.poll() is not None, 10, "the discarded guard to exit")
    assert not warm.fits(spec) and not marker.exists()

    # Started for another version of the spec: spawn discards it and starts its own guard.
    stale = WarmGuard(ServiceSpec(name="s", mode="singleton", command=["sleep", "1"]), tmp_path / "s")
    inst = Instance(spec, tmp_path / "s", "n")
    exited = threading.Event()
    inst.spawn({}, lambda i: exited.set(), Lease(time.monotonic() + 30, 0.2), stale)
    assert inst.proc is not stale.proc
    assert exited.wait(10) and inst.exit_code == 0 and marker.exists()
    wait_for(lambda: stale.proc.poll() is not None, 10, "the stale guard to exit")
