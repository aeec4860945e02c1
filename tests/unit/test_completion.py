"""Shell completion: the committed scripts work in bash, install like Typer installs them, and read the line's globals."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest

from foundation_cli.commands import completion

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_")}
    env.update(HOME=str(tmp_path), FOUNDATION_STATE_DIR=str(tmp_path / "state"), **extra)
    return env


@pytest.mark.skipif(shutil.which("foundation") is None, reason="foundation is not on PATH")
def test_bash_script_completes_commands_and_options(tmp_path):
    script = f"""
        source {ROOT / "completions/foundation.bash"}
        COMP_WORDS=(foundation k); COMP_CWORD=1; _foundation_completion foundation
        printf 'A:%s\\n' "${{COMPREPLY[@]}}"
        COMP_WORDS=(foundation kv put --c); COMP_CWORD=3; _foundation_completion foundation
        printf 'B:%s\\n' "${{COMPREPLY[@]}}"
    """
    out = subprocess.run(["bash", "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "A:kv" in out.stdout.splitlines()
    assert "B:--cas" in out.stdout.splitlines()


@pytest.mark.skipif(shutil.which("foundation") is None, reason="foundation is not on PATH")
def test_install_completion_installs_the_committed_script(tmp_path):
    env = _env(tmp_path, _TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION="1")
    out = subprocess.run(
        ["foundation", "--install-completion", "bash"], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    installed = (tmp_path / ".bash_completions/foundation.sh").read_text()
    committed = (ROOT / "completions/foundation.bash").read_text()
    body = "".join(line for line in committed.splitlines(keepends=True) if not line.startswith("# "))
    assert body.strip() == installed.strip()
    assert "foundation.sh" in (tmp_path / ".bashrc").read_text()


@pytest.mark.skipif(shutil.which("fish") is None or shutil.which("foundation") is None, reason="needs fish")
def test_fish_script_completes_commands_and_options(tmp_path):
    script = f"""
        source {ROOT / "completions/foundation.fish"}
        complete -C "foundation k"
        complete -C "foundation kv put --c"
    """
    out = subprocess.run(["fish", "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    words = [line.split("\t")[0] for line in out.stdout.splitlines()]
    assert "kv" in words and "--cas" in words


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_script_defines_the_completion_function(tmp_path):
    script = f"autoload -U compinit; compinit -u; source {ROOT / 'completions/_foundation'}; whence -w _foundation_completion"
    out = subprocess.run(["zsh", "-c", script], env=_env(tmp_path), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "_foundation_completion: function" in out.stdout


def test_scripts_embed_no_machine_paths():
    for name in ("foundation.bash", "_foundation", "foundation.fish"):
        text = (ROOT / "completions" / name).read_text()
        assert "/work/" not in text and "/root/" not in text and "/home/" not in text, name
        assert "_FOUNDATION_COMPLETE" in text


def test_settings_come_from_the_options_on_the_line(monkeypatch, tmp_path):
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "127.0.0.1:1")
    root = SimpleNamespace(parent=None, params={"consul_addr": "10.0.0.1:8500", "token": None})
    cmd = SimpleNamespace(parent=root, params={"consul_addr": None, "verbose": 0})
    assert completion._settings(cmd).consul_addr == "http://10.0.0.1:8500"
    nearer = SimpleNamespace(parent=root, params={"consul_addr": "127.0.0.1:9"})
    assert completion._settings(nearer).consul_addr == "http://127.0.0.1:9"
    assert completion._settings(None).consul_addr == "http://127.0.0.1:1"


def test_failures_are_silent(monkeypatch, tmp_path):
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "not a url::")
    assert completion.service_names("") == []
    assert completion.channel_names("x") == []
