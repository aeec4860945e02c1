"""What every command shares: global options, the run context, and the one error-to-exit mapping.

Global options can be given before the command (``foundation --explain kv put …``)
or after it (``foundation kv put … --explain``); :func:`command` adds them to
every command it registers, so each command's ``--help`` lists them too.
"""

from __future__ import annotations

import functools
import inspect
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Optional

import typer

from foundation_cli.commands.output import Output
from foundation_cli.errors import ExitStatus, FoundationError, Interrupted
from foundation_cli.raw.recorder import Recorder, set_process_recorder, use_recorder
from foundation_cli.settings import DEFAULT_CONSUL_ADDR, Settings, resolve

PANEL = "Global options"


def _global_parameters() -> list[inspect.Parameter]:
    def opt(name: str, annotation: Any, default: Any) -> inspect.Parameter:
        default.hidden = True
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    return [
        opt(
            "consul_addr",
            Optional[str],
            typer.Option(
                None,
                "--consul-addr",
                envvar="CONSUL_HTTP_ADDR",
                help="Consul HTTP API address (env CONSUL_HTTP_ADDR; else the cluster `up` made; "
                f"else {DEFAULT_CONSUL_ADDR}).",
                rich_help_panel=PANEL,
                show_default=False,
                show_envvar=False,
            ),
        ),
        opt(
            "token",
            Optional[str],
            typer.Option(
                None,
                "--token",
                envvar="CONSUL_HTTP_TOKEN",
                help="Consul ACL token (env CONSUL_HTTP_TOKEN); never printed.",
                rich_help_panel=PANEL,
                show_default=False,
                show_envvar=False,
            ),
        ),
        opt(
            "config",
            Optional[str],
            typer.Option(
                None,
                "--config",
                "-c",
                help="Path to foundation.yaml (default: ./foundation.yaml, else the XDG config dir).",
                rich_help_panel=PANEL,
                show_default=False,
            ),
        ),
        opt(
            "explain",
            Optional[bool],
            typer.Option(
                None,
                "--explain",
                help="Perform the command and show each raw operation (curl, consul, ssh) as it happens.",
                rich_help_panel=PANEL,
                show_default=False,
            ),
        ),
        opt(
            "dry_run",
            Optional[bool],
            typer.Option(
                None,
                "--dry-run",
                help="Change nothing: print the writes as a runnable bash script (reads still run).",
                rich_help_panel=PANEL,
                show_default=False,
            ),
        ),
        opt(
            "json_output",
            Optional[bool],
            typer.Option(
                None,
                "--json",
                help="Machine-readable JSON output.",
                rich_help_panel=PANEL,
                show_default=False,
            ),
        ),
        opt(
            "no_color",
            Optional[bool],
            typer.Option(
                None,
                "--no-color",
                help="No colour (also NO_COLOR).",
                rich_help_panel=PANEL,
                show_default=False,
            ),
        ),
        opt(
            "quiet",
            Optional[bool],
            typer.Option(
                None,
                "--quiet",
                "-q",
                help="Only results and errors.",
                rich_help_panel=PANEL,
                show_default=False,
            ),
        ),
        opt(
            "verbose",
            int,
            typer.Option(0, "--verbose", "-v", count=True, help="More detail (repeatable).", rich_help_panel=PANEL),
        ),
    ]


# Accepted by the root and by every command, but hidden from their --help to keep it to a screen:
# the root's epilog lists them compactly, and the man page and docs/cli.md list them in full.
GLOBAL_PARAMETERS = _global_parameters()
GLOBAL_NAMES = [p.name for p in GLOBAL_PARAMETERS]
GLOBALS_EPILOG = (
    "Also takes the global options --explain, --dry-run, --json, --consul-addr, --token, "
    "--config, --no-color, -q, -v (see foundation --help)."
)


@dataclass
class Run:
    """The context of one command run: how it was asked to run, where output goes, what it did."""

    settings: Settings
    out: Output
    recorder: Recorder

    def consul(self):
        """A recording Consul client for this run's settings."""
        from foundation_cli.tools import consul as consul_tool

        return consul_tool.connect(self.settings, recorder=self.recorder)


_run: Run | None = None


def current() -> Run:
    """The active run (set by :func:`command` before the command body executes)."""
    if _run is None:  # pragma: no cover - only when a command body is called outside the CLI
        raise RuntimeError("no active foundation command run")
    return _run


def store_root_globals(ctx: typer.Context, values: dict[str, Any]) -> None:
    """The root callback keeps the global options given before the command name."""
    ctx.ensure_object(dict)
    ctx.obj["globals"] = values


def _merged_globals(local: dict[str, Any]) -> dict[str, Any]:
    try:  # Typer >= 0.2x vendors click as typer._click; its context stack is the one in use
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - a Typer that runs on the click package
        from click import get_current_context

    ctx = get_current_context(silent=True)
    merged: dict[str, Any] = {}
    if ctx is not None:
        root = ctx.find_root()
        if isinstance(root.obj, dict):
            merged.update(root.obj.get("globals", {}))
    for key, value in local.items():
        if value not in (None, 0) or key not in merged:
            merged[key] = value
    return merged


def make_settings(values: dict[str, Any]) -> Settings:
    return resolve(
        consul_addr=values.get("consul_addr"),
        token=values.get("token"),
        config_path=values.get("config"),
        explain=bool(values.get("explain")),
        dry_run=bool(values.get("dry_run")),
        json_output=bool(values.get("json_output")),
        no_color=bool(values.get("no_color")),
        quiet=bool(values.get("quiet")),
        verbose=int(values.get("verbose") or 0),
        argv=sys.argv[1:],
    )


def execute(func: Callable[..., Any], kwargs: dict[str, Any], global_values: dict[str, Any]) -> Any:
    """Run a command body with its context; map errors to exit codes (the only place that does)."""
    global _run
    out: Output | None = None
    previous_recorder = None
    try:
        settings = make_settings(_merged_globals(global_values))
        out = Output(settings)
        recorder = Recorder(dry_run=settings.dry_run)
        if settings.explain or settings.verbosity > 1:
            recorder.subscribe(out.explain_operation)
        previous_recorder = set_process_recorder(recorder)
        _run = Run(settings, out, recorder)
        with use_recorder(recorder):
            result = func(**kwargs)
        if settings.dry_run:
            import shlex

            out.dry_run_report(recorder, title="foundation " + shlex.join(settings.argv))
        return result
    except FoundationError as exc:
        (out or Output(Settings())).error(exc)
        raise typer.Exit(int(exc.exit_status)) from None
    except KeyboardInterrupt:
        (out or Output(Settings())).error(Interrupted())
        raise typer.Exit(int(ExitStatus.INTERRUPTED)) from None
    except (typer.Exit, typer.Abort, SystemExit):
        raise
    except Exception as exc:  # a bug: still one line for the user, the traceback only with -vv
        if hasattr(exc, "exit_code") and hasattr(exc, "show"):  # click's own usage errors: click reports them
            raise
        output = out or Output(Settings())
        if output.settings.verbosity > 1:
            import traceback

            output.stderr.write(traceback.format_exc())
        from foundation_cli.errors import internal_error

        output.error(internal_error(exc))
        raise typer.Exit(int(ExitStatus.FAILURE)) from None
    finally:
        # One run's recorder (a dry run's above all) must not outlive it in a process that runs more.
        if previous_recorder is not None:
            set_process_recorder(previous_recorder)


def with_global_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Wrap a command body: add the global options to its signature and run it via :func:`execute`."""
    sig = inspect.signature(func)
    own = list(sig.parameters.values())
    positional = [p for p in own if p.kind != inspect.Parameter.KEYWORD_ONLY]
    keyword = [p for p in own if p.kind == inspect.Parameter.KEYWORD_ONLY]
    params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in positional + keyword] + GLOBAL_PARAMETERS

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        global_values = {name: kwargs.pop(name) for name in GLOBAL_NAMES if name in kwargs}
        return execute(func, kwargs, global_values)

    wrapper.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    annotations = dict(getattr(func, "__annotations__", {}))
    annotations.update({p.name: p.annotation for p in GLOBAL_PARAMETERS})
    wrapper.__annotations__ = annotations
    return wrapper


def command(
    app: typer.Typer, name: str | None = None, **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``@command(app, "name")``: register a command that honours the global options."""

    def decorator(func: Callable[..., Any]) -> Callable[..., Any]:
        kwargs.setdefault("epilog", GLOBALS_EPILOG)
        app.command(name, **kwargs)(with_global_options(func))
        return func

    return decorator


def group(name: str, help_text: str) -> typer.Typer:
    """A command group with Foundation's conventions (no completion flags, help on no args)."""
    return typer.Typer(
        name=name,
        help=help_text,
        no_args_is_help=True,
        add_completion=False,
        rich_markup_mode="rich",
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def seconds(value: Any) -> float:
    """Parse a time option: a duration (``500ms``, ``30s``, ``2m``) or a bare number of seconds, above 0."""
    from foundation_cli.core import durations

    try:
        return durations.parse_positive(str(value))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def timeout_option(default: float | None, help_text: str, *names: str) -> Any:
    """The one ``--timeout`` option shape: every command takes ``30s``, ``2m`` or plain seconds."""
    return typer.Option(
        default,
        "--timeout",
        *names,
        parser=seconds,
        metavar="DURATION",
        help=f"{help_text} (e.g. 30s, 2m; a bare number is seconds).",
    )
