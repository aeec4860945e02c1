"""`foundation up` says what it did on every host also when a step stops the whole run (table, --json)."""

from __future__ import annotations

import json
from importlib import resources

import jsonschema
from typer.testing import CliRunner

from foundation_cli.commands.app import app
from foundation_cli.core import orchestrator
from foundation_cli.core.bootstrap import HostResult, StepResult
from foundation_cli.errors import PartialFailure, UnreachableError

SCHEMA = json.loads(resources.files("foundation_cli").joinpath("schemas/up.json").read_text())
WHY = "the new cluster cannot elect a leader: its 3 servers wait for each other (bootstrap_expect)"


def _stop_after_apply(run: orchestrator.UpRun) -> None:
    """What the lost-server run leaves: two servers done, one lost before its Consul, then the stop."""
    for addr, role in (("a", "server"), ("b", "server"), ("c", "server"), ("d", "client")):
        r = run.results[addr]
        r.node_name, r.role, r.address = f"n-{addr}", role, addr
        r.steps = [StepResult("secrets", "written"), StepResult("consul", "started")]
    run.results["c"].steps = [StepResult("secrets", "written")]
    run.results["c"].fail(UnreachableError("c: SSH connection lost"))
    raise PartialFailure(WHY, hint="re-run `foundation up`")


def _bug_after_apply(run: orchestrator.UpRun) -> None:
    run.results["a"].steps = [StepResult("consul", "started")]
    raise KeyError("boom")


def invoke(args, tmp_path, monkeypatch, step=_stop_after_apply):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(orchestrator, "UP_STEPS", (step,))
    (tmp_path / "foundation.yaml").write_text("hosts: [a, b, c, d]\nservers: 3\n")
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_a_stopped_up_prints_every_host_in_json_with_the_error(tmp_path, monkeypatch):
    res = invoke(["up", "--json"], tmp_path, monkeypatch)
    assert res.exit_code == 7, res.output
    doc = json.loads(res.stdout)
    assert [(h["host"], h["state"]) for h in doc["hosts"]] == [
        ("a", "changed"),
        ("b", "changed"),
        ("c", "failed"),
        ("d", "changed"),
    ]
    assert doc["hosts"][2]["error"] == "c: SSH connection lost"
    assert [s["step"] for s in doc["hosts"][2]["steps"]] == ["secrets"]
    assert doc["error"] == {"message": WHY, "hint": "re-run `foundation up`", "exit_status": 7}
    jsonschema.validate(doc, SCHEMA)  # the document of a normal run, with error set
    assert f"error: {WHY}" in res.stderr


def test_a_stopped_up_prints_the_table_then_the_one_line_error(tmp_path, monkeypatch):
    res = invoke(["up"], tmp_path, monkeypatch)
    assert res.exit_code == 7, res.output
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:] if line.strip()}
    assert sorted(rows) == ["a", "b", "c", "d"], res.stdout
    assert "failed" in rows["c"] and "SSH connection lost" in rows["c"]
    assert "consul: started" in rows["a"] and "changed" in rows["d"]
    assert "cluster " not in res.stdout  # no "cluster … at …: changed" verdict for a cluster that did not form
    assert res.stderr.strip().splitlines()[-2:] == [f"error: {WHY}", "hint: re-run `foundation up`"]


def test_a_finished_up_has_a_null_error_in_json():
    doc = orchestrator.UpResult(hosts=[HostResult(alias="a", steps=[StepResult("consul", "started")])]).to_dict()
    jsonschema.validate(doc, SCHEMA)
    assert doc["error"] is None


def test_a_bug_half_way_still_shows_the_hosts_then_is_reported_as_one(tmp_path, monkeypatch):
    res = invoke(["up", "--json"], tmp_path, monkeypatch, step=_bug_after_apply)
    assert res.exit_code == 1, res.output
    doc = json.loads(res.stdout)
    assert [(h["host"], h["state"]) for h in doc["hosts"]][0] == ("a", "changed")
    assert doc["error"]["message"] == "internal error: KeyError: 'boom'" and doc["error"]["exit_status"] == 1
    jsonschema.validate(doc, SCHEMA)
    assert "error: internal error: KeyError: 'boom'" in res.stderr and "Traceback" not in res.stderr


def _interrupted_after_apply(run: orchestrator.UpRun) -> None:
    run.results["a"].steps = [StepResult("consul", "started")]
    run.results["a"].done = True  # a finished; b half-way; c and d not reached
    run.results["b"].steps = [StepResult("secrets", "written")]
    raise KeyboardInterrupt


def test_ctrl_c_in_up_still_shows_every_host_then_says_interrupted(tmp_path, monkeypatch):
    res = invoke(["up"], tmp_path, monkeypatch, step=_interrupted_after_apply)
    assert res.exit_code == 130, res.output
    rows = {line.split()[0]: line for line in res.stdout.splitlines()[1:] if line.strip()}
    assert sorted(rows) == ["a", "b", "c", "d"] and "changed" in rows["a"] and "consul: started" in rows["a"]
    for host in "bcd":  # never "unchanged": nothing says what is on them now
        assert "failed" in rows[host] and "interrupted before this host was done" in rows[host], res.stdout
    lines = res.stderr.strip().splitlines()
    assert lines[-2] == "error: interrupted" and lines[-1].startswith("hint: run the same command again"), lines

    res = invoke(["up", "--json"], tmp_path, monkeypatch, step=_interrupted_after_apply)
    assert res.exit_code == 130, res.output
    doc = json.loads(res.stdout)
    assert doc["error"]["message"] == "interrupted" and doc["error"]["exit_status"] == 130
    assert [h["state"] for h in doc["hosts"]] == ["changed", "failed", "failed", "failed"]
    jsonschema.validate(doc, SCHEMA)


def test_ctrl_c_returns_at_once_and_starts_no_further_host():
    """for_each on Ctrl-C: the hosts queued behind are not started, the running ones are not waited for."""
    import threading

    from foundation_cli.core.fanout import for_each

    release, started, outcome = threading.Event(), [], []

    def work(item: int) -> None:
        started.append(item)
        if item == 0:
            raise KeyboardInterrupt  # what Ctrl-C is to the waiting caller
        release.wait(10)  # a host still busy

    def call() -> None:
        try:
            for_each(list(range(40)), work, parallel=2)
        except KeyboardInterrupt:
            outcome.append("interrupted")

    caller = threading.Thread(target=call)
    caller.start()
    caller.join(5)
    try:
        assert outcome == ["interrupted"] and not caller.is_alive()  # returned while a host is still busy
        assert len(started) < 10, started  # the queued ones were cancelled
    finally:
        release.set()
