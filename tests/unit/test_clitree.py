"""scripts/clitree.py: help text split into prose and examples; rich markup stripped; the tree walked."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))

import clitree  # noqa: E402


def test_split_help_separates_examples_and_strips_markup():
    paragraphs, examples = clitree.split_help(
        "Do [bold]the[/bold] thing.\n\nMore words\nwrapped here.\n\n"
        "Example: [cyan]foundation kv get a[/cyan]\n  foundation kv get b\n"
    )
    assert paragraphs == ["Do the thing.", "More words wrapped here."]
    assert examples == ["foundation kv get a", "foundation kv get b"]


def test_plain_keeps_square_brackets_that_are_not_markup():
    assert clitree.plain("More detail (repeatable). [default: 0]") == "More detail (repeatable). [default: 0]"


def test_tree_has_every_registered_command_once():
    tree = clitree.load_tree()
    names = [c.name for c in tree.walk()]
    assert names[0] == "foundation"
    assert len(names) == len(set(names))
    assert "foundation kv put" in names
    put = next(c for c in tree.walk() if c.name == "foundation kv put")
    assert put.synopsis.startswith("foundation kv put [OPTIONS] KEY VALUE")
    assert put.examples and all(e.startswith("foundation ") for e in put.examples)
