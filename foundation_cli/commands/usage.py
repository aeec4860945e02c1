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
import functools
import os
import sys
from collections.abc import Callable, Iterator, MutableMapping
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
        self._pending: dict[str, Callable[[], Any]] = {}  # imported, not yet converted to click
        self._modules: set[str] = set()
        super().__init__(*args, **kwargs)

    @property  # type: ignore[override]
    def commands(self) -> dict[str, Any]:
        for name in self.index:
            self._load(name)
        for name in list(self._pending):
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
            if name in self._pending:
                self._loaded[name] = self._pending.pop(name)()
            return self._loaded.get(name)
        module_name, _panel, _summary = self.index[name]
        if module_name not in self._modules:
            self._modules.add(module_name)
            self._load_module(module_name)
        if name in self._pending:
            self._loaded[name] = self._pending.pop(name)()
        return self._loaded.get(name)

    def _load_module(self, module_name: str) -> None:
        """Import ``commands.<module_name>`` and let it register on a scratch Typer.

        Nothing is converted to click yet: each command is, when it is asked for (a module's other
        commands, and a group's other subcommands, never are on the way to the one being run).
        """
        import importlib

        import typer

        module = importlib.import_module(f"foundation_cli.commands.{module_name}")
        scratch = typer.Typer()
        register = getattr(module, "register", None)
        if register is not None:
            register(scratch)
        else:  # a module that is one command group (kv): its Typer app under its own name
            scratch.add_typer(module.app)
        style = {
            "pretty_exceptions_short": scratch.pretty_exceptions_short,
            "rich_markup_mode": scratch.rich_markup_mode,
        }
        for info in scratch.registered_commands:
            self._pending[_command_name(info)] = functools.partial(self._convert_command, info, style)
        for group_info in scratch.registered_groups:
            group = _lazy_group(group_info, style)
            self._pending[group.name] = functools.partial(self._placed, group)

    def _convert_command(self, info: Any, style: dict[str, Any]) -> Any:
        import typer.main

        return self._placed(typer.main.get_command_from_info(info, **style))

    def _placed(self, cmd: Any) -> Any:
        entry = self.index.get(cmd.name)
        if entry is not None:
            cmd.rich_help_panel = entry[1]  # where `foundation --help` shows it (the man page too)
        return cmd

    def format_help(self, ctx: Any, formatter: Any) -> None:
        if ctx.parent is None and self.index:  # the root: drawn from the index, no module imported
            from foundation_cli.commands import root_help

            root_help.show()
            return
        super().format_help(ctx, formatter)


def _command_name(info: Any) -> str:
    import typer.main

    return info.name or typer.main.get_command_name(info.callback.__name__)


def _lazy_group(group_info: Any, style: dict[str, Any]) -> Any:
    """Typer's click group for ``group_info``, its subcommands converted when first asked for."""
    import typer.main

    sub = group_info.typer_instance
    infos = sub.registered_commands
    sub.registered_commands = []  # get_group_from_info converts every command it finds here
    try:
        group = typer.main.get_group_from_info(group_info, **style)
    finally:
        sub.registered_commands = infos
    commands = LazyCommands(
        {_command_name(info): functools.partial(typer.main.get_command_from_info, info, **style) for info in infos}
    )
    for name, cmd in group.commands.items():  # its nested groups, already converted
        commands[name] = cmd
    group.commands = commands
    return group


class LazyCommands(MutableMapping[str, Any]):
    """A group's subcommands by name, each made (converted from Typer to click) on first access."""

    def __init__(self, pending: dict[str, Callable[[], Any]]) -> None:
        self._pending = dict(pending)
        self._made: dict[str, Any] = {}
        self._order = list(pending)

    def __getitem__(self, name: str) -> Any:
        if name not in self._made:
            self._made[name] = self._pending.pop(name)()  # KeyError for an unknown name, as a dict
        return self._made[name]

    def __setitem__(self, name: str, cmd: Any) -> None:
        self._pending.pop(name, None)
        self._made[name] = cmd
        if name not in self._order:
            self._order.append(name)

    def __delitem__(self, name: str) -> None:
        if name not in self._order:
            raise KeyError(name)
        self._pending.pop(name, None)
        self._made.pop(name, None)
        self._order.remove(name)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._order))

    def __len__(self) -> int:
        return len(self._order)

    def __contains__(self, name: object) -> bool:
        return name in self._order
