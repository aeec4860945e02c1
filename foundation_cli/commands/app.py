"""The ``foundation`` entry point: a lazy command tree, wired from one static index.

:data:`COMMANDS` lists every top-level command in the order ``foundation --help`` shows it: the
module under ``foundation_cli.commands`` that registers it, its help panel, and its one-line
summary. Running a command imports that module only (:class:`~foundation_cli.commands.usage.LazyGroup`);
``foundation --help`` is drawn from the index alone (:mod:`~foundation_cli.commands.root_help`),
without Typer or any command module. Nothing here works at import: the Typer app is built on
first use of :data:`app`.

Adding a command: register it in its module as usual, then add its line here (name, module, panel,
summary = the first paragraph of its docstring). ``tests/unit/test_command_index.py`` fails, saying
which line, until the index matches the tree.
"""

import sys  # no `from __future__ import annotations`: Typer reads the root callback's annotations at runtime
from typing import Any

from foundation_cli.commands.index import COMMANDS, GLOBALS_HELP, HELP  # noqa: F401 - the index, re-exported
from foundation_cli.commands.index import epilog as _epilog


def __getattr__(name: str) -> Any:
    """``app`` (the Typer app) and ``EPILOG`` are made on first use, not at import."""
    if name == "app":
        globals()["app"] = built = _build_app()
        return built
    if name == "EPILOG":
        return _epilog()
    raise AttributeError(name)


def _build_app():
    import inspect
    from typing import Optional

    import typer

    from foundation_cli import __version__
    from foundation_cli.commands import common
    from foundation_cli.commands.usage import LazyGroup

    class RootGroup(LazyGroup):
        index = COMMANDS

    app = typer.Typer(
        name="foundation",
        cls=RootGroup,  # lazy commands; usage errors as one `error:` line + hint, like every other error
        help=HELP,
        epilog=_epilog(),
        no_args_is_help=True,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"]},
    )

    def _version(value: bool) -> None:
        if value:
            typer.echo(f"foundation {__version__}")
            raise typer.Exit()

    def _root(
        ctx: typer.Context,
        version: Optional[bool] = typer.Option(
            None, "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
        **global_values,
    ) -> None:
        common.store_root_globals(ctx, global_values)

    # The root callback takes the same global options as every command (documented in GLOBALS_HELP).
    signature = inspect.signature(_root)
    _root.__signature__ = signature.replace(
        parameters=[p for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD] + common.GLOBAL_PARAMETERS
    )
    _root.__annotations__ = {**_root.__annotations__, **{p.name: p.annotation for p in common.GLOBAL_PARAMETERS}}
    app.callback()(_root)
    return app


def main() -> None:
    """Console-script entry point: ``foundation --help`` straight from the index, the rest via Typer."""
    if sys.argv[1:] in (["--help"], ["-h"]):
        from foundation_cli.commands import root_help

        root_help.show()
        return
    __getattr__("app")(prog_name="foundation")
