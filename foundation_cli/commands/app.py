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


def run() -> int | str | None:
    """Run the command line in ``sys.argv``; return its exit status (what ``sys.exit`` was given)."""
    try:
        _with_stack_room(_dispatch)
    except SystemExit as exc:  # click ends every run, success included, with sys.exit
        return exc.code
    return 0


def main() -> None:
    """Console-script entry point: :func:`run`, then end the process (:func:`_exit`)."""
    import gc

    # With the default threshold (700) a `kv get` runs ~80 young collections while it imports its
    # stack, ~3% of its instructions, and they free ~500 of its ~31,000 objects. Commands that run
    # for long still collect: every 100,000 new container objects.
    gc.set_threshold(100_000, 10, 10)
    _exit(run())


def _dispatch() -> None:
    """``foundation --help`` straight from the index, the rest via Typer."""
    if sys.argv[1:] in (["--help"], ["-h"]):
        from foundation_cli.commands import root_help

        root_help.show()
        return
    __getattr__("app")(prog_name="foundation")


def _with_stack_room(func):
    """Call ``func`` with room for its whole call stack in one CPython data-stack chunk.

    CPython (3.11+) keeps Python frames on a per-thread stack of 16 KiB chunks, maps a new chunk
    with mmap when a call does not fit and unmaps it as soon as that call returns. Code that calls a
    small function over and over right at a chunk boundary (the regex parser while requests and
    urllib3 compile their patterns deep inside click's dispatch) maps and unmaps a chunk on every
    call: `foundation discover` did ~5,500 mmap/munmap pairs, ~35 ms of kernel time, where and how
    often depending only on how deep the stack happened to be. This frame declares a 56 KiB value
    stack, so the interpreter gives it a 128 KiB chunk and every frame called below it fits in the
    remaining ~70 KiB: no boundary is crossed (docs/performance.md, "Latest figures").
    """
    return func()


# 7,200 slots (8 bytes each): the chunk is the smallest 16 KiB * 2**n above (slots + 1,000) * 8 bytes.
_with_stack_room.__code__ = _with_stack_room.__code__.replace(co_stacksize=7_200)


def _exit(status: int | str | None) -> None:
    """End the process with ``status`` without tearing the interpreter down.

    Python's own shutdown frees every module and object one by one (~8% of a `kv get`) for a
    process about to vanish. When only this thread is left, run the ``atexit`` handlers (logging,
    temporary directories, coverage), flush stdout and stderr, and leave with ``os._exit``. Anything
    unusual (a message as status, other threads, a stream that cannot be flushed) takes the normal
    ``sys.exit`` path.
    """
    threading = sys.modules.get("threading")
    if isinstance(status, int | None) and (threading is None or threading.active_count() == 1):
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            sys.exit(status)
        import atexit
        import os

        atexit._run_exitfuncs()
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        except (OSError, ValueError):
            os._exit(120)  # what Python itself returns when it cannot flush stdout at exit
        os._exit(status or 0)
    sys.exit(status)
