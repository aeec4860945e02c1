"""The screens the docs show are the walkthrough's real screens (scripts/walkthrough_screens.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("walkthrough_screens", ROOT / "scripts" / "walkthrough_screens.py")
screens = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(screens)  # type: ignore[union-attr]


def test_every_screen_block_matches_its_saved_screen():
    for page in screens.PAGES:
        text = page.read_text(encoding="utf-8")
        blocks = list(screens.BLOCK.finditer(text))
        assert blocks, f"{page.name} shows no walkthrough screen"
        for m in blocks:
            name = m.group("name")
            assert (screens.SCREENS / f"{name}.txt").exists(), f"{page.name}: no docs/walkthrough/{name}.txt"
            assert m.group("body") == screens.render(name), (
                f"{page.name}: screen {name!r} differs from docs/walkthrough/{name}.txt; "
                "run python3 scripts/walkthrough_screens.py --embed"
            )


def test_saved_screens_show_a_command_and_its_exit():
    for f in sorted(screens.SCREENS.glob("*.txt")):
        lines = f.read_text(encoding="utf-8").splitlines()
        assert lines[0].startswith("$ "), f.name
        assert lines[-1].startswith("[exit "), f.name
