"""The mortal-up helper: shows what answered, returns only claimable hosts, never a silent yes."""

from __future__ import annotations

import json

import typer
from typer.testing import CliRunner

from foundation_cli.commands import mdns as mdns_commands
from foundation_cli.commands.common import command, current
from foundation_cli.core import mdns_records, strategies
from foundation_cli.core.hosts import HostRecord


def _found() -> list[HostRecord]:
    def rec(addr: str, status: str, cluster: str | None = None) -> HostRecord:
        return HostRecord(
            address=addr, name=f"n{addr[-1]}", source="mdns", cluster_id=cluster, extra={"status": status}
        )

    return [
        rec("198.18.0.2", mdns_records.UNCLAIMED),
        rec("198.18.0.3", mdns_records.UNCLAIMED),
        rec("198.18.0.4", mdns_records.OTHER_CLUSTER, "theirs"),
        rec("198.18.0.5", mdns_records.INVALID),
    ]


def app_with(monkeypatch, found: list[HostRecord]) -> typer.Typer:
    monkeypatch.setattr(strategies, "discover", lambda cfg, settings, **kw: list(found))
    app = typer.Typer()

    @command(app, "fake-up")
    def fake_up(yes: bool = typer.Option(False, "--yes")) -> None:
        hosts = mdns_commands.mortal_hosts(None, yes=yes)
        current().out.line(json.dumps([h.address for h in hosts]))

    @app.callback()
    def _root() -> None:
        pass

    return app


def test_yes_returns_only_unclaimed_and_shows_everything(monkeypatch):
    result = CliRunner().invoke(app_with(monkeypatch, _found()), ["fake-up", "--yes", "--no-color"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["198.18.0.2", "198.18.0.3"]
    assert "198.18.0.4" in result.stderr and "other cluster" in result.stderr
    assert "leaving 2 machine(s) alone" in result.stderr


def test_without_yes_a_closed_stdin_is_a_refusal(monkeypatch):
    result = CliRunner().invoke(app_with(monkeypatch, _found()), ["fake-up"], input="")
    assert result.exit_code == 2
    assert "no confirmation" in result.stderr and "Traceback" not in result.output


def test_without_yes_answers(monkeypatch):
    app = app_with(monkeypatch, _found())
    result = CliRunner().invoke(app, ["fake-up"], input="y\n")
    assert result.exit_code == 0 and "198.18.0.3" in result.stdout
    result = CliRunner().invoke(app, ["fake-up"], input="n\n")
    assert result.exit_code == 2 and "not bootstrapped" in result.stderr


def test_nothing_claimable_returns_empty_without_asking(monkeypatch):
    found = [h for h in _found() if h.extra["status"] != mdns_records.UNCLAIMED]
    result = CliRunner().invoke(app_with(monkeypatch, found), ["fake-up"], input="")
    assert result.exit_code == 0 and result.stdout.strip().splitlines()[-1] == "[]"


def test_bad_interface_and_bad_fields_are_one_line_errors(monkeypatch):
    from foundation_cli.commands.app import app
    from foundation_cli.tools import mdns as mdns_tool

    monkeypatch.delenv(mdns_tool.ENV_INTERFACE, raising=False)
    runner = CliRunner()
    r = runner.invoke(app, ["discover-hosts"])
    assert r.exit_code == 2 and "explicit interface" in r.stderr
    assert "Traceback" not in r.output and isinstance(r.exception, SystemExit)
    r = runner.invoke(app, ["advertise", "--interface", "nope0"])
    assert r.exit_code == 2 and "no such network interface: nope0" in r.stderr
    r = runner.invoke(app, ["advertise", "--interface", "127.0.0.1", "--node", "bad name", "--dry-run"])
    assert r.exit_code == 2 and "node has invalid characters" in r.stderr
    r = runner.invoke(app, ["advertise", "--interface", "127.0.0.1", "--role", "server", "--dry-run"])
    assert r.exit_code == 2 and "role server without a cluster id" in r.stderr
