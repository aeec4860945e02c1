#!/usr/bin/env python3
"""Refresh the screens the docs show from a real run of the first-hour walkthrough.

    python3 scripts/walkthrough_screens.py            # run the walkthrough (root: it builds a lab), then embed
    python3 scripts/walkthrough_screens.py --embed    # only re-embed docs/walkthrough/*.txt into the pages

The walkthrough test (tests/walkthrough/test_first_hour.py) types every command
into a real terminal and saves each screen as docs/walkthrough/NAME.txt. Pages
show a screen between ``<!-- screen: NAME -->`` and ``<!-- /screen -->``; this
script rewrites those blocks from the files, and tests/unit/test_docs_screens.py
fails when a page and its screen differ, so the docs cannot drift from the program.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCREENS = ROOT / "docs" / "walkthrough"
PAGES = [ROOT / "docs" / "getting-started.md"]
BLOCK = re.compile(r"(<!-- screen: (?P<name>[\w-]+) -->\n)(?P<body>.*?)(<!-- /screen -->)", re.S)


def render(name: str) -> str:
    """The Markdown block that shows screen ``name``."""
    text = (SCREENS / f"{name}.txt").read_text(encoding="utf-8").rstrip("\n")
    return f"```console\n{text}\n```\n"


def embed(page: Path) -> bool:
    """Rewrite every screen block of ``page`` from its file; True if the page changed."""
    old = page.read_text(encoding="utf-8")
    new = BLOCK.sub(lambda m: m.group(1) + render(m.group("name")) + m.group(4), old)
    if new != old:
        page.write_text(new, encoding="utf-8")
    return new != old


def main(argv: list[str]) -> int:
    if "--embed" not in argv:
        with tempfile.TemporaryDirectory() as out:
            env = {**os.environ, "FOUNDATION_WALKTHROUGH_SCREENS": out}
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/walkthrough"]
            if subprocess.run(cmd, cwd=ROOT, env=env, check=False).returncode != 0:
                print("the walkthrough failed: screens left as they were", file=sys.stderr)
                return 1
            SCREENS.mkdir(parents=True, exist_ok=True)
            for f in Path(out).glob("*.txt"):
                (SCREENS / f.name).write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
    for page in PAGES:
        if embed(page):
            print(f"updated {page.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
