"""Rendering for people and machines: results, tables, JSON, errors, ``--explain`` and ``--dry-run``.

The one place where text reaches the terminal. rich is imported only when a
table or a styled line is printed; every string passes the secret masker.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import IO, Any, NamedTuple

from foundation_cli.errors import FoundationError
from foundation_cli.raw.operation import RawOperation
from foundation_cli.raw.recorder import Recorder
from foundation_cli.raw.secrets import mask
from foundation_cli.raw.text import printable
from foundation_cli.settings import Settings


def dumps(data: Any) -> str:
    """Stable JSON text for ``--json`` output (masked)."""
    from foundation_cli.raw.text import json_printable

    return mask(json_printable(json.dumps(data, indent=2, sort_keys=False, default=str, ensure_ascii=False)))


# Environment that makes rich style output even when it is not a terminal.
_RICH_FORCING = ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "JUPYTER_COLUMNS", "JUPYTER_LINES")


def _styled(stream: Any) -> bool:
    """Whether rich would style or size output for ``stream`` differently from plain text."""
    import os

    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) or any(os.environ.get(name) for name in _RICH_FORCING)


def _console_width() -> int:
    """The width rich gives a Console that is not a terminal: a terminal on 0/1/2, else COLUMNS, else 80."""
    import os

    width = None
    for fd in (0, 1, 2):
        try:
            width = os.get_terminal_size(fd).columns
            break
        except (AttributeError, ValueError, OSError):
            pass
    columns = os.environ.get("COLUMNS")
    if columns is not None and columns.isdigit():
        width = int(columns)
    return width or 80


def plain_table(columns: list[str], rows: list[list[str]], *, title: str | None = None) -> str | None:
    """A table as rich prints ``Table(box=None, pad_edge=False)`` to a non-terminal, or ``None`` when
    only rich can say (a cell that is not plain ASCII, or a table wider than the console: rich wraps)."""
    texts = [*columns, *(cell for row in rows for cell in row), title or ""]
    if not all(text.isascii() and text.isprintable() for text in texts):
        return None
    widths = [max([len(col)] + [len(row[i]) for row in rows if i < len(row)]) for i, col in enumerate(columns)]
    total = sum(widths) + 2 * (len(widths) - 1)
    if not columns or 0 in widths or total > _console_width() or any(len(row) != len(columns) for row in rows):
        return None
    if title:  # rich centres a title by its own rules: leave titled tables to it
        return None
    lines = []
    for row in [columns, *rows]:
        lines.append("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    return "".join(line + "\n" for line in lines)


class Styled(NamedTuple):
    """A table cell with a colour for terminals (the text stays plain: no markup is read from it)."""

    text: str
    style: str | None = None


class Output:
    """Where a command's output goes; streams are injectable for tests."""

    def __init__(self, settings: Settings, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None) -> None:
        self.settings = settings
        self._stdout = stdout
        self._stderr = stderr
        self._console = None
        self._err_console = None

    # Streams are looked up late so CliRunner's swapped sys.stdout is honoured.
    @property
    def stdout(self) -> IO[str]:
        if self.settings.dry_run:
            # In a dry run stdout carries the script (or its JSON); what the command says goes to stderr.
            return self.stderr
        return self._stdout or sys.stdout

    @property
    def stderr(self) -> IO[str]:
        return self._stderr or sys.stderr

    @property
    def script_stream(self) -> IO[str]:
        return self._stdout or sys.stdout

    def console(self, *, err: bool = False):
        """A rich Console on stdout (or stderr), honouring NO_COLOR / --no-color."""
        from rich.console import Console

        stream = self.stderr if err else self.stdout
        return Console(
            file=stream,
            no_color=not self.settings.color,
            highlight=False,
            soft_wrap=False,
            force_terminal=None if self.settings.color else False,
        )

    # -- results -----------------------------------------------------------------
    def line(self, text: str = "") -> None:
        """A plain line of result text (suppressed by -q only if it is chatter; results always print)."""
        self.stdout.write(printable(mask(text)) + "\n")
        self.stdout.flush()

    def value(self, data: bytes) -> None:
        """A stored value, byte for byte (user data: not masked, no newline added unless on a terminal).

        On a terminal its control characters are shown as ``\\xNN``: a value is data anyone with KV
        write access chose, and an escape sequence in it must not drive the terminal.
        """
        stream = self.stdout
        if stream.isatty():
            stream.write(printable(data.decode("utf-8", "replace")))
        elif hasattr(stream, "buffer"):
            stream.flush()
            stream.buffer.write(data)
            stream.buffer.flush()
        else:
            stream.write(data.decode("utf-8", "replace"))
        if data and not data.endswith(b"\n") and stream.isatty():
            stream.write("\n")
        stream.flush()

    def info(self, text: str) -> None:
        """Progress/chatter on stderr; silenced by ``-q``."""
        if not self.settings.quiet:
            self.stderr.write(printable(mask(text)) + "\n")
            self.stderr.flush()

    def detail(self, text: str) -> None:
        """Extra detail on stderr with ``-v``."""
        if self.settings.verbosity > 0:
            self.stderr.write(printable(mask(text)) + "\n")

    def json(self, data: Any) -> None:
        self.stdout.write(dumps(data) + "\n")
        self.stdout.flush()

    def table(
        self,
        columns: Sequence[str],
        rows: Iterable[Sequence[Any]],
        *,
        title: str | None = None,
    ) -> None:
        """A rich table (plain text when NO_COLOR); cells are masked.

        Cells hold names and values from hosts and KV: plain text (never rich markup), escapes shown.
        A :class:`Styled` cell keeps its text and adds a colour on a terminal.
        """
        styled = [
            [cell if isinstance(cell, Styled) else Styled("" if cell is None else str(cell)) for cell in row]
            for row in rows
        ]
        cells = [[printable(mask(cell.text)) for cell in row] for row in styled]
        plain = plain_table(list(columns), cells, title=title) if not _styled(self.stdout) else None
        if plain is not None:  # a pipe or a file: the same text rich would print, without importing rich
            self.stdout.write(plain)
            self.stdout.flush()
            return
        from rich.table import Table
        from rich.text import Text

        table = Table(title=title, box=None, header_style="bold", pad_edge=False)
        for col in columns:
            table.add_column(Text(col))  # headers are plain text too
        for row, styles in zip(cells, styled, strict=True):
            table.add_row(*(Text(cell, style=s.style or "") for cell, s in zip(row, styles, strict=True)))
        self.console().print(table)

    def result(self, data: Any, *, text: str | None = None, table: tuple | None = None) -> None:
        """Print ``data`` as JSON with ``--json``, else ``text`` or a ``(columns, rows)`` table."""
        if self.settings.json:
            self.json(data)
        elif table is not None:
            self.table(*table)
        elif text is not None:
            self.line(text)

    # -- questions ---------------------------------------------------------------
    def confirm(self, question: str, *, no_answer: str, no_answer_hint: str, declined: str) -> None:
        """Ask ``question`` on the terminal; return on yes, raise a one-line UsageError otherwise.

        With no terminal (closed stdin, CI) nothing is assumed: ``no_answer`` is the error.
        """
        from foundation_cli.errors import UsageError

        stdin = sys.stdin
        if stdin is not None and hasattr(stdin, "isatty") and stdin.isatty():
            self.stderr.write(question + " [y/N] ")
            self.stderr.flush()
        try:
            answer = stdin.readline() if stdin is not None else ""
        except (OSError, ValueError):
            answer = ""
        if not answer:
            raise UsageError(no_answer, hint=no_answer_hint)
        if answer.strip().lower() not in ("y", "yes"):
            raise UsageError(declined)

    # -- errors ------------------------------------------------------------------
    def error(self, exc: FoundationError | str, hint: str | None = None) -> None:
        """One red line, plus a dim hint line when there is one."""
        message = exc.message if isinstance(exc, FoundationError) else str(exc)
        hint = exc.hint if isinstance(exc, FoundationError) else hint
        red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if self._styled_err() else ("", "", "")
        self.stderr.write(f"{red}error: {printable(mask(message))}{reset}\n")
        for line in exc.details if isinstance(exc, FoundationError) else ():
            self.stderr.write(f"  | {mask(printable(line))}\n")
        if hint:
            self.stderr.write(f"{dim}hint: {printable(mask(hint))}{reset}\n")
        self.stderr.flush()

    def warn(self, text: str) -> None:
        yellow, reset = ("\x1b[33m", "\x1b[0m") if self._styled_err() else ("", "")
        self.stderr.write(f"{yellow}warning: {printable(mask(text))}{reset}\n")

    def _styled_err(self) -> bool:
        stream = self.stderr
        return self.settings.color and hasattr(stream, "isatty") and stream.isatty()

    # -- raw operations ----------------------------------------------------------
    def explain_operation(self, op: RawOperation) -> None:
        """``--explain``: one raw operation as one block on stderr (the recorder calls this in send order)."""
        styles = ("\x1b[36m", "\x1b[2m", "\x1b[0m") if self._styled_err() else ("", "", "")
        from foundation_cli.raw import render  # only --explain and --dry-run render operations

        self.stderr.write(render.explain_block(op, styles=styles))  # one write: blocks never interleave
        self.stderr.flush()

    def dry_run_report(self, recorder: Recorder, *, title: str) -> None:
        """``--dry-run``: the runnable script of the writes (or JSON of all operations)."""
        if self.settings.json:
            self.script_stream.write(
                dumps({"dry_run": True, "operations": [op.to_dict() for op in recorder.operations]}) + "\n"
            )
            return
        from foundation_cli.raw import render

        self.script_stream.write(render.script(recorder.operations, title=title, addr=self.settings.consul_addr))
        self.script_stream.flush()
