"""Output.table: a Styled cell is coloured on a terminal and plain in a pipe; markup in data stays text."""

from __future__ import annotations

import io

from foundation_cli.commands.output import Output, Styled
from foundation_cli.settings import Settings


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _table(stream) -> str:
    Output(Settings(), stdout=stream).table(
        ["NODE", "HEALTH"], [["n1", Styled("passing", "green")], ["n2", "[red]x[/]"]]
    )
    return stream.getvalue()


def test_a_styled_cell_is_plain_text_in_a_pipe():
    assert _table(io.StringIO()).splitlines() == ["NODE  HEALTH   ", "n1    passing  ", "n2    [red]x[/]"]


def test_a_styled_cell_is_coloured_on_a_terminal_and_data_markup_is_not():
    out = _table(_Terminal())
    assert "\x1b[32mpassing" in out  # green
    assert "[red]x[/]" in out and "\x1b[31m" not in out  # a value's markup is shown, never obeyed
