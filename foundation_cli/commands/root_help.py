"""``foundation --help`` drawn from the static command index, without Typer, click or any command module.

The root help is the one screen every new user sees first, so it must be instant. Typer would build
it by importing every command module, converting every command and importing ``typer.rich_utils``
(which pulls in rich's Markdown, syntax highlighting and tracebacks): about 3/4 of the time. This
module draws the same screen with the same rich primitives and styles as Typer's
``rich_format_help`` (usage, help text, the options panel, one panel per command group, the
epilog) from :data:`foundation_cli.commands.app.COMMANDS`. A unit test compares its output with
Typer's own rendering of the full tree, plain and coloured, at several widths.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

USAGE = "Usage: foundation [OPTIONS] COMMAND [ARGS]..."
# The root's visible options as Typer lists them: (long names, short names, help).
OPTIONS = (
    ("--version", "", "Show the version and exit."),
    ("--help", "-h", "Show this message and exit."),
)

# Typer's rich_utils styles (typer 0.19).
STYLE_OPTION = "bold cyan"
STYLE_SWITCH = "bold green"
STYLE_NEGATIVE_OPTION = "bold magenta"
STYLE_NEGATIVE_SWITCH = "bold red"
STYLE_METAVAR = "bold yellow"
STYLE_METAVAR_SEPARATOR = "dim"
STYLE_USAGE = "yellow"
STYLE_USAGE_COMMAND = "bold"
STYLE_HELPTEXT = "dim"
STYLE_PANEL_BORDER = "dim"
STYLE_COMMANDS_TABLE_FIRST_COLUMN = "bold cyan"
DEFAULT_PANEL = "Commands"


def _console():
    from rich.console import Console
    from rich.highlighter import RegexHighlighter
    from rich.theme import Theme

    class OptionHighlighter(RegexHighlighter):
        highlights = [
            r"(^|\W)(?P<switch>\-\w+)(?![a-zA-Z0-9])",
            r"(^|\W)(?P<option>\-\-[\w\-]+)(?![a-zA-Z0-9])",
            r"(?P<metavar>\<[^\>]+\>)",
            r"(?P<usage>Usage: )",
        ]

    highlighter = OptionHighlighter()
    width = os.getenv("TERMINAL_WIDTH")
    force = True if os.getenv("GITHUB_ACTIONS") or os.getenv("FORCE_COLOR") or os.getenv("PY_COLORS") else None
    if os.getenv("_TYPER_FORCE_DISABLE_TERMINAL"):
        force = False
    console = Console(
        theme=Theme(
            {
                "option": STYLE_OPTION,
                "switch": STYLE_SWITCH,
                "negative_option": STYLE_NEGATIVE_OPTION,
                "negative_switch": STYLE_NEGATIVE_SWITCH,
                "metavar": STYLE_METAVAR,
                "metavar_sep": STYLE_METAVAR_SEPARATOR,
                "usage": STYLE_USAGE,
            }
        ),
        highlighter=highlighter,
        color_system="auto",
        force_terminal=force,
        width=int(width) if width else None,
    )
    return console, highlighter


def show(
    *,
    help_text: str | None = None,
    epilog: str | None = None,
    commands: dict[str, tuple[str, str, str]] | None = None,
) -> None:
    """Print the root help to stdout (what ``foundation --help`` shows)."""
    from rich.align import Align
    from rich.columns import Columns
    from rich.console import Group
    from rich.padding import Padding
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    if help_text is None or epilog is None or commands is None:
        from foundation_cli.commands import index

        help_text = index.HELP if help_text is None else help_text
        epilog = index.epilog() if epilog is None else epilog
        commands = index.COMMANDS if commands is None else commands
    console, highlighter = _console()

    def rich_text(text: str, style: str = "") -> Any:
        return highlighter(Text.from_markup(inspect.cleandoc(text), style=style))

    console.print(Padding(highlighter(USAGE), 1), style=STYLE_USAGE_COMMAND)

    first, *rest = inspect.cleandoc(help_text).partition("\f")[0].split("\n\n")
    parts: list[Any] = [rich_text(first.replace("\n", " ").strip())]
    if rest:
        parts += [Text(""), rich_text("\n\n".join(rest), style=STYLE_HELPTEXT)]
    console.print(Padding(Align(Group(*parts), pad=False), (0, 1, 1, 1)))

    options = Table(highlight=True, show_header=False, expand=True, box=None, pad_edge=False, padding=(0, 1))
    for long, short, text in OPTIONS:
        metavar = Text(style=STYLE_METAVAR, overflow="fold")  # flags: an empty metavar cell, as Typer draws it
        options.add_row(highlighter(long), highlighter(short), Text(""), Text(""), metavar, Columns([rich_text(text)]))
    console.print(Panel(options, border_style=STYLE_PANEL_BORDER, title="Options", title_align="left"))

    panels: dict[str, list[tuple[str, str]]] = {}
    for name, (_module, panel, summary) in commands.items():
        panels.setdefault(panel or DEFAULT_PANEL, []).append((name, summary))
    width = max((len(name) for name in commands), default=0)
    ordered = sorted(panels.items(), key=lambda item: item[0] != DEFAULT_PANEL)  # Typer: the default panel first
    for title, rows in ordered:
        table = Table(highlight=False, show_header=False, expand=True, box=None, pad_edge=False, padding=(0, 1))
        table.add_column(style=STYLE_COMMANDS_TABLE_FIRST_COLUMN, no_wrap=True, width=width)
        table.add_column("Description", justify="left", no_wrap=False, ratio=10)
        for name, summary in rows:
            table.add_row(Text(name), rich_text(summary.strip()))
        console.print(Panel(table, border_style=STYLE_PANEL_BORDER, title=title, title_align="left"))

    if epilog:
        text = "\n".join(x.replace("\n", " ").strip() for x in epilog.split("\n\n"))
        console.print(Padding(Align(rich_text(text), pad=False), 1))
