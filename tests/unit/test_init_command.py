"""`foundation init` and `foundation config show --effective` through the CLI."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from foundation_cli.commands.app import app


def invoke(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path / "state"))
    return CliRunner().invoke(app, args, catch_exceptions=False)


def test_init_writes_and_never_overwrites(tmp_path, monkeypatch):
    first = invoke(["init", "--mode", "wizard"], tmp_path, monkeypatch)
    assert first.exit_code == 0
    text = (tmp_path / "foundation.yaml").read_text()
    assert text.startswith("# foundation.yaml — wizard mode")
    again = invoke(["init"], tmp_path, monkeypatch)
    assert again.exit_code == 6 and "already exists" in again.output
    assert (tmp_path / "foundation.yaml").read_text() == text
    forced = invoke(["init", "--mode", "apprentice", "--force"], tmp_path, monkeypatch)
    assert forced.exit_code == 0 and "apprentice" in (tmp_path / "foundation.yaml").read_text()


def test_config_show_effective_masks_secrets(tmp_path, monkeypatch):
    (tmp_path / "foundation.yaml").write_text("hosts: [a]\nconsul: {encrypt: c2VjcmV0c2VjcmV0c2VjcmV0}\n")
    res = invoke(["config", "show", "--json"], tmp_path, monkeypatch)
    assert res.exit_code == 0, res.output
    data = json.loads(res.output)
    assert data["mode"] == "wizard" and data["servers"] == 1
    assert "c2VjcmV0c2VjcmV0c2VjcmV0" not in res.output
    text = invoke(["config", "show", "--effective"], tmp_path, monkeypatch)
    assert text.output.startswith("# mode: wizard (from foundation.yaml)")


def test_config_show_without_file_is_mortal(tmp_path, monkeypatch):
    res = invoke(["config", "show"], tmp_path, monkeypatch)
    assert res.exit_code == 0 and "# mode: mortal" in res.output


def test_config_show_bad_file_is_one_line(tmp_path, monkeypatch):
    (tmp_path / "foundation.yaml").write_text("hosts: [a, b]\nservers: 2\n")
    res = invoke(["config", "show"], tmp_path, monkeypatch)
    assert res.exit_code == 2
    assert "foundation.yaml:2:10: servers must be an odd number ≥ 1, got 2" in res.output
