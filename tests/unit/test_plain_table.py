"""Tables printed to a pipe or a file skip rich, and must read exactly as rich would have printed them."""

from __future__ import annotations

import io

from hypothesis import example, given, settings
from hypothesis import strategies as st

from foundation_cli.commands.output import plain_table

ascii_cell = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)


def rich_table(columns, rows, title=None) -> str:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = io.StringIO()
    console = Console(file=out, no_color=True, highlight=False, soft_wrap=False, force_terminal=False, width=80)
    table = Table(title=title, box=None, header_style="bold", pad_edge=False)
    for col in columns:
        table.add_column(Text(col))
    for row in rows:
        table.add_row(*(Text(cell) for cell in row))
    console.print(table)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(
    st.integers(min_value=1, max_value=5).flatmap(
        lambda n: st.tuples(
            st.lists(ascii_cell, min_size=n, max_size=n),
            st.lists(st.lists(ascii_cell, min_size=n, max_size=n), max_size=6),
            st.one_of(st.none(), ascii_cell),
        )
    )
)
@example(table=(["\\["], [], None))  # a header rich would read as markup
def test_plain_table_is_what_rich_prints(table):
    from unittest import mock

    columns, rows, title = table
    with mock.patch("foundation_cli.commands.output._console_width", return_value=80):
        ours = plain_table(columns, rows, title=title)
    if ours is not None:  # None: rich draws it (too wide, or a title wider than the table)
        assert ours == rich_table(columns, rows, title)


def test_non_ascii_and_wide_tables_are_left_to_rich(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    assert plain_table(["NAME"], [["café"]]) is None
    assert plain_table(["A", "B"], [["x" * 50, "y" * 40]]) is None
    assert plain_table(["NODE", "STATE"], [["n1", "alive"]]) == "NODE  STATE\nn1    alive\n"
