"""The CLI skeleton as a user meets it: help, version, exit codes, global options, import cost."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.lab.cli import ROOT, foundation

HEAVY = ("paramiko", "zeroconf", "consul")


def imported_modules(args: list[str]) -> set[str]:
    """Top-level names of every module ``python -X importtime -m foundation_cli ARGS`` imported."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "foundation_cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = set()
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            name = line.rsplit("|", 1)[1].strip()
            if name and name != "imported package":
                names.add(name.split(".")[0])
    assert "foundation_cli" in names
    return names


@pytest.mark.parametrize("args", [["--help"], ["kv", "--help"], ["kv", "put", "--help"], ["--version"]])
def test_help_imports_none_of_the_heavy_tools(args):
    assert not (imported_modules(args) & set(HEAVY))


def test_help_lists_groups_global_options_and_exit_codes():
    proc = foundation(["--help"], env={"NO_COLOR": "1", "COLUMNS": "120", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for needle in ("kv", "--explain", "--dry-run", "--json", "--consul-addr", "--token", "Exit codes", "Example:"):
        assert needle in out, needle
    assert "Traceback" not in out + proc.stderr


def test_version():
    from foundation_cli import __version__

    proc = foundation(["--version"])
    assert proc.returncode == 0 and proc.stdout.strip() == f"foundation {__version__}"


def test_kv_help_fits_a_screen_and_has_an_example():
    for args in (
        ["kv", "put", "--help"],
        ["kv", "get", "--help"],
        ["kv", "delete", "--help"],
        ["kv", "list", "--help"],
    ):
        proc = foundation(args, env={"NO_COLOR": "1", "COLUMNS": "100", "PATH": "/usr/bin:/bin"})
        assert proc.returncode == 0
        assert "Example: foundation kv" in proc.stdout
        assert len(proc.stdout.splitlines()) <= 50, args


@pytest.mark.parametrize(
    "args",
    [
        ["no-such-command"],
        ["kv", "put"],
        ["kv", "put", "k", "v", "--no-such-flag"],
        ["kv", "put", "k", "v", "--cas", "x"],
    ],
)
def test_usage_errors_exit_2_without_traceback(args):
    proc = foundation(args)
    assert proc.returncode == 2, (args, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout


def test_global_options_work_before_and_after_the_command(consul_agent):
    env = {k: v for k, v in consul_agent.env.items() if k != "CONSUL_HTTP_ADDR"}
    addr = consul_agent.http_addr
    after = foundation(["kv", "put", "g/after", "1", "--consul-addr", addr, "--explain"], env=env)
    before = foundation(["--consul-addr", addr, "--explain", "kv", "put", "g/before", "2"], env=env)
    for proc in (after, before):
        assert proc.returncode == 0, proc.stderr
        assert "$ curl" in proc.stderr
    assert consul_agent.kv_get("foundation/kv/g/after") == b"1"
    assert consul_agent.kv_get("foundation/kv/g/before") == b"2"


def test_quiet_silences_chatter_but_not_results(consul_agent):
    env = consul_agent.env
    assert foundation(["kv", "put", "q/k", "v", "-q"], env=env).stderr == ""
    got = foundation(["kv", "get", "q/k", "-q"], env=env)
    assert got.stdout == "v" and got.stderr == ""
