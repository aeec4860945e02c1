"""Command-line usage errors in Foundation's error shape: one ``error:`` line and a ``hint:`` line.

The parser (click, inside Typer) reports an unknown option, a missing argument
or a bad value in a boxed "Usage … Try … Error" block. Every other Foundation
error is one line plus a hint (:meth:`Output.error`), so the root command
group catches the parser's usage errors where they are raised — while parsing
(``make_context``) and while resolving subcommands (``invoke``) — and prints
them the same way, exit status 2. ``foundation`` alone still prints the help.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

from typer.core import TyperGroup

from foundation_cli.errors import ExitStatus

try:  # Typer >= 0.2x vendors click as typer._click
    from typer._click.exceptions import NoArgsIsHelpError
    from typer._click.exceptions import UsageError as ClickUsageError
except ImportError:  # pragma: no cover - a Typer that runs on the click package
    from click.exceptions import NoArgsIsHelpError
    from click.exceptions import UsageError as ClickUsageError


@contextlib.contextmanager
def usage_errors_as_one_line() -> Iterator[None]:
    """Print a click usage error as ``error: …`` + ``hint: see `… --help``` and exit 2."""
    try:
        yield
    except NoArgsIsHelpError:
        raise
    except ClickUsageError as exc:
        from foundation_cli.commands.output import Output
        from foundation_cli.settings import Settings

        command = exc.ctx.command_path if exc.ctx is not None else "foundation"
        color = "NO_COLOR" not in os.environ and "--no-color" not in sys.argv[1:]
        Output(Settings(color=color)).error(" ".join(exc.format_message().split()), hint=f"see `{command} --help`")
        sys.exit(int(ExitStatus.USAGE))


class FoundationGroup(TyperGroup):
    """The root group: Typer's, with usage errors in Foundation's one-line shape."""

    def make_context(self, info_name: str | None, args: list[str], parent: Any = None, **extra: Any) -> Any:
        with usage_errors_as_one_line():
            return super().make_context(info_name, args, parent=parent, **extra)

    def invoke(self, ctx: Any) -> Any:
        with usage_errors_as_one_line():
            return super().invoke(ctx)

    def get_params(self, ctx: Any) -> list[Any]:
        # Typer's --install-completion/--show-completion keep working and stay in man/docs; left out of
        # the root --help so the command list fits one screen.
        params = super().get_params(ctx)
        for param in params:
            if param.name in ("install_completion", "show_completion"):
                param.hidden = True
        return params


class LazyGroup(FoundationGroup):
    """The root group, loading a command's module only when that command is invoked.

    ``index`` (set by ``commands.app``) maps each top-level name to ``(module, panel, summary)``:
    ``foundation --help`` is drawn from it alone (``commands.root_help``) and resolving ``foundation
    kv get`` imports ``commands.kv`` and nothing else. ``commands`` (click's dict) loads every module,
    for the generators and tests that walk the whole tree; a test keeps the index equal to that tree.
    """

    index: dict[str, tuple[str, str, str]] = {}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._loaded: dict[str, Any] = {}
        self._modules: set[str] = set()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, Any]:
        for name in self.index:
            self._load(name)
        return {name: self._loaded[name] for name in self.index if name in self._loaded} | {
            k: v for k, v in self._loaded.items() if k not in self.index
        }

    @commands.setter
    def commands(self, value: Any) -> None:
        self._loaded = dict(value or {})

    def list_commands(self, ctx: Any) -> list[str]:
        return list(self.index)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        return self._load(cmd_name)

    def _load(self, name: str) -> Any:
        if name in self._loaded or name not in self.index:
            return self._loaded.get(name)
        module_name, _panel, _summary = self.index[name]
        if module_name not in self._modules:
            self._modules.add(module_name)
            self._load_module(module_name)
        return self._loaded.get(name)

    def _load_module(self, module_name: str) -> None:
        """Import ``commands.<module_name>``, let it register on a scratch Typer, convert only that."""
        import importlib

        import typer
        import typer.main

        module = importlib.import_module(f"foundation_cli.commands.{module_name}")
        scratch = typer.Typer()
        register = getattr(module, "register", None)
        if register is not None:
            register(scratch)
        else:  # a module that is one command group (kv): its Typer app under its own name
            scratch.add_typer(module.app)
        group = typer.main.get_group(scratch)
        for name, cmd in group.commands.items():
            entry = self.index.get(name)
            if entry is not None:
                cmd.rich_help_panel = entry[1]  # where `foundation --help` shows it (the man page too)
            self._loaded[name] = cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if ctx.parent is None and self.index:  # the root: drawn from the index, no module imported
            from foundation_cli.commands import root_help

            root_help.show()
            return
        super().format_help(ctx, formatter)
