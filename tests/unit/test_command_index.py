"""The static command index (commands/app.py COMMANDS) and the root help drawn from it.

`foundation --help` and command dispatch read the index instead of importing every command module,
so these tests keep it equal to the real tree, and the root help equal to what Typer would draw.
"""

from __future__ import annotations

import contextlib
import inspect
import io
import subprocess
import sys

import pytest
import typer.main
from typer.core import TyperGroup

from foundation_cli.commands import app as app_module
from foundation_cli.commands import root_help


def _root():
    root = typer.main.get_command(app_module.app)
    return root, root.context_class(root, info_name="foundation", **root.context_settings)


def test_index_matches_the_command_tree():
    root, _ctx = _root()
    tree = root.commands  # loads every module
    problems = []
    for name, cmd in tree.items():
        module = (getattr(cmd, "callback", None) and cmd.callback.__module__ or "").rsplit(".", 1)[-1]
        summary = inspect.cleandoc(cmd.short_help or cmd.help or "").split("\n\n")[0].strip()
        entry = app_module.COMMANDS.get(name)
        if entry is None:
            problems.append(f"missing: {name!r}: ({module!r}, PANEL, {summary!r}),")
        elif entry[2] != summary:
            problems.append(f"summary of {name!r} is {summary!r}")
        elif module and entry[0] != module:
            problems.append(f"module of {name!r} is {module!r}")
    problems += [
        f"{name!r} is in the index but no module registers it" for name in app_module.COMMANDS if name not in tree
    ]
    assert not problems, "update COMMANDS in foundation_cli/commands/app.py:\n" + "\n".join(problems)
    assert list(tree) == list(app_module.COMMANDS)


def _typer_root_help() -> str:
    root, ctx = _root()
    root.commands  # noqa: B018 - load every module, as Typer's own help would
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        TyperGroup.format_help(root, ctx, None)  # Typer's rich help, not the index's
    return out.getvalue()


def _index_root_help() -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        root_help.show()
    return out.getvalue()


@pytest.mark.parametrize("width", ["60", "80", "100", "140"])
@pytest.mark.parametrize("color", [False, True])
def test_root_help_is_what_typer_draws(monkeypatch, width, color):
    monkeypatch.setenv("TERMINAL_WIDTH", width)
    monkeypatch.setenv("COLUMNS", width)
    monkeypatch.delenv("NO_COLOR", raising=False)
    if color:
        monkeypatch.setenv("FORCE_COLOR", "1")
    else:
        monkeypatch.delenv("FORCE_COLOR", raising=False)
    import typer.rich_utils as ru

    monkeypatch.setattr(ru, "MAX_WIDTH", int(width))
    monkeypatch.setattr(ru, "FORCE_TERMINAL", True if color else None)
    expected = _typer_root_help()
    assert ("\x1b[" in expected) == color
    assert _index_root_help() == expected


def test_root_help_imports_no_command_module_nor_typer():
    code = (
        "import sys; sys.argv = ['foundation', '--help']\n"
        "from foundation_cli.commands.app import run\n"
        "run()\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('typer', 'click', 'foundation_cli.commands.')))\n"
        "print(loaded, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Usage: foundation [OPTIONS] COMMAND [ARGS]..." in proc.stdout
    loaded = "['foundation_cli.commands.app', 'foundation_cli.commands.index', 'foundation_cli.commands.root_help']"
    assert proc.stderr.strip() == loaded


def test_a_command_loads_only_its_module():
    code = (
        "import sys; sys.argv = ['foundation', 'kv', '--help']\n"
        "from foundation_cli.commands.app import run\n"
        "run()\n"
        "print(sorted(m.rsplit('.', 1)[1] for m in sys.modules if m.startswith('foundation_cli.commands.')),"
        " file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    loaded = set(eval(proc.stderr.strip().splitlines()[-1]))  # noqa: S307 - our own printed list
    assert "kv" in loaded
    assert not loaded & {"cluster", "placement", "health", "mdns", "day2", "channels", "discovery", "init"}


def _command_paths(cmd, prefix=()):
    """Every command and subcommand path of the full tree (every module loaded)."""
    for name, sub in sorted(getattr(cmd, "commands", {}).items()):
        yield (*prefix, name)
        yield from _command_paths(sub, (*prefix, name))


def test_every_command_is_reachable_in_a_fresh_process():
    """The lazy tree loads only the invoked module: a subcommand another module registers would be lost."""
    root, _ctx = _root()
    paths = [p for p in _command_paths(root) if p[0] not in ("consul", "ssh")]  # pass-through: consul's help
    script = (
        "import sys, subprocess\n"
        "bad = []\n"
        "for line in sys.stdin.read().splitlines():\n"
        "    argv = line.split(' ')\n"
        "    p = subprocess.run([sys.executable, '-m', 'foundation_cli', *argv, '--help'], capture_output=True)\n"
        "    if p.returncode != 0: bad.append(line + ': ' + p.stderr.decode()[:200])\n"
        "print('\\n'.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], input="\n".join(" ".join(p) for p in paths), capture_output=True, text=True
    )
    assert out.stdout.strip() == "", out.stdout


def test_a_group_converts_only_the_subcommand_asked_for():
    root, ctx = _root()
    kv = root.get_command(ctx, "kv")
    assert list(kv.commands) == ["get", "put", "delete", "list"]  # names known, nothing converted
    assert kv.commands._made == {}
    get = kv.get_command(ctx, "get")
    assert get.name == "get" and [p.name for p in get.params][0] == "key"
    assert set(kv.commands._made) == {"get"}
    assert kv.get_command(ctx, "nope") is None


def test_lazy_commands_is_an_ordered_mapping():
    from foundation_cli.commands.usage import LazyCommands

    made = []
    commands = LazyCommands({"b": lambda: made.append("b") or "B", "a": lambda: made.append("a") or "A"})
    assert list(commands) == ["b", "a"] and len(commands) == 2 and "a" in commands and made == []
    assert commands["a"] == "A" and commands["a"] == "A" and made == ["a"]
    commands["c"] = "C"
    del commands["b"]
    assert dict(commands) == {"a": "A", "c": "C"} and made == ["a"]
    with pytest.raises(KeyError):
        commands["b"]
    with pytest.raises(KeyError):
        del commands["b"]
