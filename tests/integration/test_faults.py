"""Faults on one real Consul (loopback) with a real node agent: lean versions of bench/faults.py.

- a frozen agent (SIGSTOP) loses its singleton to its fence guard, and thawed it runs it again (one copy);
- two shells racing `start-singleton X` with different commands: check-and-set lets one win, the other
  exits 6 (conflict) — never two specs, never a silent overwrite.

The 3-server versions (crash, partition, leader kill, no quorum, repeated) are in bench/faults.py;
their figures are in docs/reliability.md.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.test_placement_support import (
    agent_passing,
    cli,
    http_json,
    pids_running,
    shared_dir,
    start_local_agent,
    stop_process,
    wait_for,
    witness_runs,
    write_witness,
)


@pytest.fixture
def witness(tmp_path):
    import shutil

    d = shared_dir()
    try:
        yield write_witness(d)
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.timeout(120)
def test_frozen_agent_loses_its_singleton_and_runs_it_again_when_thawed(fresh_consul, tmp_path, witness):
    script, log = witness
    addr, env = fresh_consul.http_addr, fresh_consul.env
    agent = start_local_agent(addr, tmp_path / "data", tmp_path / "agent.log")
    try:
        wait_for(lambda: agent_passing(addr), 20, "the agent to register")
        cli(["start-singleton", "wit", "--", sys.executable, str(script), str(log)], env)
        first = wait_for(lambda: pids_running(str(log)), 10, "the witness")[0]

        os.kill(agent.pid, signal.SIGSTOP)
        try:
            # The agent cannot renew the lease: its fence guard stops the copy on its own.
            wait_for(lambda: first not in pids_running(str(log)), 10, "the fence guard to stop the singleton")
            assert agent.poll() is None  # the agent is still there, frozen
            assert [r for r in witness_runs(log) if r.pid == first][0].stopped  # SIGTERM first: it said stop
        finally:
            os.kill(agent.pid, signal.SIGCONT)

        # Thawed: it sees the fenced exit and runs the singleton again — one copy.
        second = wait_for(lambda: [p for p in pids_running(str(log)) if p != first], 30, "the singleton back")
        time.sleep(1.0)
        assert pids_running(str(log)) == second and len(second) == 1
        assert "stopped by its fence guard" in (tmp_path / "agent.log").read_text()
        cli(["stop", "wit"], env)
        assert pids_running(str(log)) == []
    finally:
        stop_process(agent)


@pytest.mark.timeout(120)
def test_racing_start_singleton_one_wins_the_other_exits_6(consul_agent):
    env = consul_agent.env
    argv = [sys.executable, "-m", "foundation_cli", "start-singleton"]
    conflicts = 0
    for round_ in range(6):
        name = f"race{round_}"
        procs = [
            subprocess.Popen(
                [*argv, name, "--no-wait", "--", "sleep", str(1000 + i)],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        results = [(p.wait(60), *p.communicate()) for p in procs]
        codes = sorted(code for code, _out, _err in results)
        assert all("Traceback" not in err and "internal error" not in err for _c, _o, err in results), results
        assert codes in ([0, 0], [0, 6]), results
        spec = http_json(f"{consul_agent.http_addr}/v1/kv/foundation/services/{name}?raw=1")
        stored = spec["command"][-1]
        if codes == [0, 6]:
            conflicts += 1
            loser = next(i for i, (code, _o, _e) in enumerate(results) if code == 6)
            assert stored != str(1000 + loser), "the command that exited 6 must not be the one stored"
            assert "changed while it was being updated" in results[loser][2]
        else:  # not concurrent after all: the later one updated the spec (a new generation)
            assert spec["generation"] in (1, 2)
        cli(["stop", name], env)
    print(f"{conflicts} of 6 rounds raced into a check-and-set conflict")


def test_start_singleton_race_forced_interleaving_is_a_conflict(consul_agent):
    """Both read "absent" before either writes (forced with a barrier): the check-and-set lets one through."""
    import threading

    from foundation_cli.core.service_spec import ServiceSpec
    from foundation_cli.errors import ConflictError, ExitStatus
    from foundation_cli.facades.process_manager import ProcessManager
    from foundation_cli.settings import Settings
    from foundation_cli.tools import consul as consul_tool

    barrier = threading.Barrier(2, timeout=20)
    outcomes: dict[int, object] = {}

    def shell(i: int) -> None:
        pm = ProcessManager(consul_tool.connect(Settings(consul_addr=consul_agent.http_addr)))
        read = pm.get_spec

        def read_then_wait(name: str):
            found = read(name)
            barrier.wait()
            return found

        pm.get_spec = read_then_wait
        spec = ServiceSpec(name="forced", mode="singleton", command=["sleep", str(2000 + i)])
        try:
            pm.start(spec, wait=False)
            outcomes[i] = "stored"
        except ConflictError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=shell, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    stored = [i for i, o in outcomes.items() if o == "stored"]
    lost = [o for o in outcomes.values() if isinstance(o, ConflictError)]
    assert len(stored) == 1 and len(lost) == 1, outcomes
    assert lost[0].exit_status == ExitStatus.CONFLICT == 6
    spec = http_json(f"{consul_agent.http_addr}/v1/kv/foundation/services/forced?raw=1")
    assert spec["command"] == ["sleep", str(2000 + stored[0])] and spec["generation"] == 1
    cli(["stop", "forced"], consul_agent.env)


def fill(directory: Path) -> None:
    """Fill the file system holding ``directory`` to the last page and inode."""
    directory.mkdir()
    for size in (65536, 4096, 1):
        i = 0
        while True:
            try:
                (directory / f"{size}-{i}").write_bytes(b"\0" * size * 16)
            except OSError:
                break
            i += 1


@pytest.mark.timeout(150)
def test_full_disk_is_reported_never_doubles_and_recovers(fresh_consul, tmp_path, witness):
    """The agent's data dir on a 1 MB tmpfs, filled up: a restart still runs exactly one copy, the status
    says the disk is full, instance.json stays whole, and once space returns the agent writes it again."""
    import json
    import shutil

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    script, log = witness
    addr, env = fresh_consul.http_addr, fresh_consul.env
    data = tmp_path / "data"
    data.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(data)], check=True)
    agent = None
    try:
        agent = start_local_agent(addr, data, tmp_path / "agent.log")
        wait_for(lambda: agent_passing(addr), 20, "the agent to register")
        cli(["start-singleton", "wit", "--", sys.executable, str(script), str(log)], env)
        first = wait_for(lambda: pids_running(str(log)), 10, "the witness")[0]
        meta = next(data.glob("nodes/*/services/wit/instance.json"))
        fill(data / "filler")

        os.kill(first, signal.SIGKILL)  # it crashes; the agent restarts it on the full disk
        second = wait_for(lambda: [p for p in pids_running(str(log)) if p != first], 20, "the restarted copy")
        time.sleep(1.0)
        assert pids_running(str(log)) == second and len(second) == 1  # one copy, disk full or not

        def reported():
            rows = [r for r in json.loads(cli(["ps", "wit", "--json"], env).stdout) if r.get("pid") == second[0]]
            return rows if rows and "No space left" in (rows[0].get("error") or "") else None

        wait_for(reported, 15, "ps to report the full disk")
        assert json.loads(meta.read_text())["pid"] == first  # the old record, whole (written aside, renamed)

        shutil.rmtree(data / "filler")  # space returns: the next housekeeping pass writes the record
        wait_for(lambda: json.loads(meta.read_text())["pid"] == second[0], 40, "instance.json rewritten")
        wait_for(
            lambda: not any(r.get("error") for r in json.loads(cli(["ps", "wit", "--json"], env).stdout)),
            15,
            "the error cleared",
        )
        cli(["stop", "wit"], env)
    finally:
        stop_process(agent)
        subprocess.run(["umount", "-l", str(data)], check=False)
