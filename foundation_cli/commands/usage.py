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
