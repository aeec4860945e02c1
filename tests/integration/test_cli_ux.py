"""The same UX across every command: help fits a screen with an example, exit codes, one-line errors, NO_COLOR.

The help and bad-flag checks walk the click tree, so every command is covered
as soon as it is registered. Runtime checks use the real ``foundation``
process (real exit codes, real stderr) against a real Consul agent, or against
a loopback port nobody listens on for "unreachable".
"""

from __future__ import annotations

import os
import pty
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import typer.main
from typer.testing import CliRunner

from foundation_cli.commands.app import app
from foundation_cli.errors import ExitStatus

pytestmark = pytest.mark.timeout(180)

MAX_HELP_LINES = 50
ROOT_DIR = Path(__file__).resolve().parents[2]
COLOR_SGR = re.compile(r"\x1b\[[0-9;]*?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")
ANY_ESCAPE = re.compile(r"\x1b\[")


def _walk(cmd, path):
    yield path, cmd
    if hasattr(cmd, "list_commands"):
        for name, sub in cmd.commands.items():
            if not getattr(sub, "hidden", False):
                yield from _walk(sub, path + (name,))


ROOT_CMD = typer.main.get_command(app)
ALL = list(_walk(ROOT_CMD, ()))
LEAVES = [(path, cmd) for path, cmd in ALL if path and not hasattr(cmd, "list_commands")]


def _id(path: tuple[str, ...]) -> str:
    return " ".join(("foundation",) + path)


def _invoke(args: list[str]):
    return CliRunner().invoke(app, args, env={"COLUMNS": "100", "NO_COLOR": "1", "TERMINAL_WIDTH": "100"})


# -- help: every command, as it lands ------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in ALL], ids=[_id(p) for p, _ in ALL])
def test_help_fits_a_screen_and_shows_an_example(path):
    cmd = dict(ALL)[path]
    # `foundation consul --help` is consul's own help (passed through); the command alone shows ours.
    own_help = not path or getattr(cmd, "own_help_first", True)
    result = _invoke([*path, "--help"] if own_help else list(path))
    assert result.exit_code == 0, result.output
    lines = result.output.rstrip().splitlines()
    problems = []
    if len(lines) > MAX_HELP_LINES:
        problems.append(f"{len(lines)} lines at COLUMNS=100 (max {MAX_HELP_LINES})")
    if not re.search(r"^\W*Examples?:", result.output, re.MULTILINE):
        problems.append('no "Example: foundation …" line (add one to the docstring)')
    assert not problems, f"{_id(path)} --help: " + "; ".join(problems)


# Pass-through commands (`foundation consul …`, `foundation ssh …`) hand unknown options to the real tool.


def _passes_through(cmd) -> bool:
    settings = getattr(cmd, "context_settings", None) or {}
    return any(
        getattr(cmd, flag, False) or settings.get(flag) for flag in ("ignore_unknown_options", "allow_extra_args")
    )


STRICT = [p for p, c in ALL if p and not _passes_through(c)]


@pytest.mark.parametrize("path", STRICT, ids=[_id(p) for p in STRICT])
def test_unknown_option_is_a_usage_error(path):
    result = _invoke([*path, "--no-such-option-xyz"])
    assert result.exit_code == ExitStatus.USAGE, result.output
    assert "no-such-option-xyz" in result.output
    assert "Traceback" not in result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit)


def _value_kind(param) -> str:
    """What an option takes, coarsely: flag, count, int, float, str (ranges and lists folded)."""
    if getattr(param, "is_flag", False):
        return "flag"
    if getattr(param, "count", False):
        return "count"
    name = getattr(param.type, "name", "") or ""
    kinds = {"text": "str", "choice": "str", "integer": "int", "integer range": "int", "float": "float"}
    return kinds.get(name, kinds.get(name.split()[0], name) if name else "?")


# Same name, different kind of value, on purpose: `--tag` sets tags on start-*, filters elsewhere.
DIFFERENT_BY_DESIGN = {"--tag"}


def _options_by_name() -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for path, cmd in LEAVES:
        for param in cmd.params:
            if param.param_type_name != "option" or getattr(param, "hidden", False):
                continue
            for opt in param.opts:
                if opt.startswith("--"):
                    out.setdefault(opt, {})[_id(path)] = _value_kind(param)
    return {name: uses for name, uses in out.items() if len(uses) > 1 and name not in DIFFERENT_BY_DESIGN}


SHARED_OPTIONS = _options_by_name()


@pytest.mark.parametrize("option", sorted(SHARED_OPTIONS))
def test_same_option_name_takes_the_same_kind_of_value(option):
    uses = SHARED_OPTIONS[option]
    assert len(set(uses.values())) == 1, f"{option} means different things: {uses}"


def _examples() -> list[tuple[str, str]]:
    """(command, example line) for every "Example: foundation …" in every help text."""
    out = []
    for path, cmd in ALL:
        for line in (cmd.help or "").splitlines():
            found = re.search(r"Examples?:\s*(?:\[[a-z ]+\])?\s*(.*?)\s*(?:\[/[a-z ]*\])?$", line.strip())
            if found and "foundation" in found.group(1):
                out.append((_id(path), found.group(1)))
    return out


EXAMPLES = _examples()


@pytest.mark.parametrize("where,example", EXAMPLES, ids=[f"{w}: {e}" for w, e in EXAMPLES])
def test_help_examples_name_real_commands_and_options(where, example):
    import shlex

    words = shlex.split(example)
    while words and "=" in words[0] and not words[0].startswith("-"):  # VAR=value prefixes
        words.pop(0)
    assert words and words[0] == "foundation", example
    cmd, i = ROOT_CMD, 1
    known = {o for p in ROOT_CMD.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    while hasattr(cmd, "list_commands") and i < len(words) and not words[i].startswith("-"):
        assert words[i] in cmd.commands, f"{where}: example names no command {words[i]!r}: {example}"
        cmd, i = cmd.commands[words[i]], i + 1
    known |= {o for p in cmd.params for o in getattr(p, "opts", []) + getattr(p, "secondary_opts", [])}
    known |= {"--help", "-h"}
    if _passes_through(cmd):
        return
    for word in words[i:]:
        if word == "--":
            break
        if word.startswith("-") and word != "-":
            assert word.split("=", 1)[0] in known, f"{where}: example uses unknown option {word}: {example}"


def test_unknown_command_is_a_usage_error():
    result = _invoke(["no-such-command"])
    assert result.exit_code == ExitStatus.USAGE
    assert "no-such-command" in result.output


def test_missing_argument_is_a_usage_error():
    result = _invoke(["kv", "get"])
    assert result.exit_code == ExitStatus.USAGE
    assert "Traceback" not in result.output


def test_bad_value_is_a_usage_error():
    result = _invoke(["kv", "put", "k", "v", "--cas", "not-a-number"])
    assert result.exit_code == ExitStatus.USAGE
    assert "Traceback" not in result.output


def test_version_and_help_exit_zero():
    assert _invoke(["--version"]).exit_code == 0
    assert _invoke(["--help"]).exit_code == 0


def test_install_completion_is_offered_on_the_root():
    names = {opt for p in ROOT_CMD.params for opt in getattr(p, "opts", [])}
    assert {"--install-completion", "--show-completion"} <= names


# -- runtime behaviour in the real process ---------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSUL_") and k not in ("NO_COLOR",)}
    env.update(COLUMNS="100", **extra)
    return env


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("state"))


@pytest.fixture(scope="module")
def closed_addr():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def agent(consul_agent):
    """The shared real single-server agent (tests/conftest.py)."""
    return consul_agent


def _run(args: list[str], env: dict[str, str], *, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "foundation_cli", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _assert_one_line_error(proc: subprocess.CompletedProcess) -> None:
    lines = proc.stderr.rstrip("\n").splitlines()
    assert "Traceback" not in proc.stderr + proc.stdout
    assert lines and lines[0].startswith("error: "), proc.stderr
    assert len(lines) <= 2, proc.stderr
    if len(lines) == 2:
        assert lines[1].startswith("hint: "), proc.stderr


# Read-only commands and the arguments they need; only those that exist are run.
READS = [
    ("kv", "get", "x"),
    ("kv", "list"),
    ("status",),
    ("ps",),
    ("discover", "web"),
    ("config", "get", "x"),
    ("config", "list"),
    ("services",),
    ("metrics",),
    ("optimize",),
]


@pytest.mark.parametrize("args", READS, ids=_id)
def test_unreachable_consul_exits_3_with_one_line_error(args, closed_addr, state_dir):
    leaves = {path for path, _ in LEAVES}
    if not any(args[:n] in leaves for n in range(1, len(args) + 1)):
        pytest.skip(f"{_id(args)} is not a command (yet)")
    proc = _run(list(args), _env(CONSUL_HTTP_ADDR=closed_addr, FOUNDATION_STATE_DIR=state_dir, NO_COLOR="1"))
    assert proc.returncode == ExitStatus.UNREACHABLE, (proc.returncode, proc.stdout, proc.stderr)
    _assert_one_line_error(proc)
    assert not ANY_ESCAPE.search(proc.stderr)


def test_not_found_exits_5(agent, state_dir):
    proc = _run(
        ["kv", "get", "polish/no-such-key"], _env(CONSUL_HTTP_ADDR=agent.http_addr, FOUNDATION_STATE_DIR=state_dir)
    )
    assert proc.returncode == ExitStatus.NOT_FOUND, proc.stderr
    _assert_one_line_error(proc)


def test_ok_then_conflict_exits_6(agent, state_dir):
    env = _env(CONSUL_HTTP_ADDR=agent.http_addr, FOUNDATION_STATE_DIR=state_dir)
    first = _run(["kv", "put", "polish/cas", "one", "--cas", "0"], env)
    assert first.returncode == ExitStatus.OK, first.stderr
    second = _run(["kv", "put", "polish/cas", "two", "--cas", "0"], env)
    assert second.returncode == ExitStatus.CONFLICT, second.stderr
    _assert_one_line_error(second)
    assert _run(["kv", "get", "polish/cas"], env).stdout == "one"  # nothing stored was lost


def test_acl_denied_exits_4_and_the_token_is_never_printed(consul_agent_acl, state_dir):
    env = _env(CONSUL_HTTP_ADDR=consul_agent_acl.http_addr, FOUNDATION_STATE_DIR=state_dir)
    denied = _run(["kv", "get", "polish/x"], env)
    assert denied.returncode == ExitStatus.PERMISSION_DENIED, denied.stderr
    _assert_one_line_error(denied)
    allowed = _run(["kv", "get", "polish/x", "--explain"], {**env, "CONSUL_HTTP_TOKEN": consul_agent_acl.token})
    assert allowed.returncode == ExitStatus.NOT_FOUND, allowed.stderr
    assert consul_agent_acl.token not in allowed.stdout + allowed.stderr
    assert "$CONSUL_HTTP_TOKEN" in allowed.stderr


def test_ctrl_c_exits_130_with_one_line(agent, state_dir):
    import signal

    if ("listen",) not in {path for path, _ in LEAVES}:
        pytest.skip("no listen command")
    env = _env(CONSUL_HTTP_ADDR=agent.http_addr, FOUNDATION_STATE_DIR=state_dir, NO_COLOR="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundation_cli", "listen", "polish-ctrl-c"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert "listening" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == ExitStatus.INTERRUPTED
    lines = err.strip().splitlines()
    assert lines[0] == "error: interrupted" and len(lines) == 2 and lines[1].startswith("hint: run the same command")


def test_invalid_input_from_the_command_body_exits_2(agent, state_dir):
    proc = _run(["kv", "put", "a//b", "v"], _env(CONSUL_HTTP_ADDR=agent.http_addr, FOUNDATION_STATE_DIR=state_dir))
    assert proc.returncode == ExitStatus.USAGE
    _assert_one_line_error(proc)


def test_global_options_before_the_command_are_honoured(agent, state_dir):
    """`foundation --dry-run kv put …` must not write; `foundation --json kv get …` must print JSON."""
    env = _env(CONSUL_HTTP_ADDR=agent.http_addr, FOUNDATION_STATE_DIR=state_dir)
    dry = _run(["--dry-run", "kv", "put", "polish/dry", "v"], env)
    assert dry.returncode == ExitStatus.OK, dry.stderr
    assert "curl" in dry.stdout and "polish/dry" in dry.stdout
    assert _run(["kv", "get", "polish/dry"], env).returncode == ExitStatus.NOT_FOUND  # nothing was written
    assert _run(["kv", "put", "polish/json", "v"], env).returncode == ExitStatus.OK
    out = _run(["--json", "kv", "get", "polish/json"], env)
    assert out.returncode == ExitStatus.OK and out.stdout.lstrip().startswith("{"), out.stdout


# Read commands with tables or text, and their --json twin (schema file when one is published).
JSON_READS = [
    (("kv", "list"), None),
    (("ps",), None),
    (("services",), None),
    (("config", "list"), None),
    (("discover", "consul"), "discover.json"),
    (("status",), "status.json"),
    (("optimize",), "optimize.json"),
]


@pytest.mark.parametrize("args,schema", JSON_READS, ids=[_id(a) for a, _ in JSON_READS])
def test_json_twin_is_json_and_follows_its_schema(args, schema, agent, state_dir):
    leaves = {path for path, _ in LEAVES}
    if not any(args[:n] in leaves for n in range(1, len(args) + 1)):
        pytest.skip(f"{_id(args)} is not a command (yet)")
    import json

    env = _env(CONSUL_HTTP_ADDR=agent.http_addr, FOUNDATION_STATE_DIR=state_dir)
    proc = _run([*args, "--json"], env)
    assert proc.returncode == ExitStatus.OK, proc.stderr
    assert not ANY_ESCAPE.search(proc.stdout)
    data = json.loads(proc.stdout)
    if schema:
        import jsonschema

        schema_path = ROOT_DIR / "foundation_cli" / "schemas" / schema
        jsonschema.validate(data, json.loads(schema_path.read_text(encoding="utf-8")))


# -- colour ------------------------------------------------------------------------------------------


def _run_tty(args: list[str], env: dict[str, str]) -> tuple[int, str]:
    """Run with stdout and stderr on a pseudo-terminal (where colour would be used), reading as it runs."""
    import select

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "foundation_cli", *args],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 60)
            if not ready:
                break
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child side is closed
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    return code, b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.parametrize("args", [["kv", "get", "x"], ["--help"], ["kv", "put", "--help"]], ids=" ".join)
def test_no_color_means_no_colour_on_a_terminal(args, closed_addr, state_dir):
    env = _env(CONSUL_HTTP_ADDR=closed_addr, FOUNDATION_STATE_DIR=state_dir, TERM="xterm-256color")
    _, coloured = _run_tty(args, env)
    assert COLOR_SGR.search(coloured), "expected colour on a terminal without NO_COLOR (test is not meaningful)"
    _, plain = _run_tty(args, {**env, "NO_COLOR": "1"})
    # NO_COLOR (no-color.org) is about colour; rich may still use bold/dim in help.
    assert not COLOR_SGR.search(plain), repr(plain[:400])


def test_errors_have_no_escapes_at_all_with_no_color(closed_addr, state_dir):
    env = _env(CONSUL_HTTP_ADDR=closed_addr, FOUNDATION_STATE_DIR=state_dir, TERM="xterm-256color")
    for extra_env, extra_args in (({"NO_COLOR": "1"}, []), ({}, ["--no-color"])):
        code, text = _run_tty(["kv", "get", "x", *extra_args], {**env, **extra_env})
        assert code == ExitStatus.UNREACHABLE
        assert text.startswith("error: ") and not ANY_ESCAPE.search(text), repr(text)


@pytest.mark.parametrize(
    "args",
    [["kv", "get", "--no-such-option-xyz"], ["no-such-command"], ["kv", "get"], ["kv", "put", "k", "v", "--cas", "x"]],
    ids=" ".join,
)
def test_usage_errors_are_one_error_line(args):
    proc = _run(args, _env(NO_COLOR="1"))
    assert proc.returncode == ExitStatus.USAGE
    _assert_one_line_error(proc)
    assert proc.stderr.splitlines()[1].startswith("hint: see `foundation")


@pytest.mark.skipif(shutil.which("foundation") is None, reason="foundation is not on PATH")
def test_console_script_exit_codes_match_python_m(closed_addr, state_dir):
    env = _env(CONSUL_HTTP_ADDR=closed_addr, FOUNDATION_STATE_DIR=state_dir)
    proc = subprocess.run(["foundation", "kv", "get", "x"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == ExitStatus.UNREACHABLE
    _assert_one_line_error(proc)
