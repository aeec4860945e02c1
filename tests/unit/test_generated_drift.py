"""Generated files can never drift from the code: regenerate them and compare with what is committed.

If this fails after you added or changed a command, run the script the
message names (or all three) and commit the result:

    python3 scripts/gen_completions.py && python3 scripts/gen_man.py && python3 scripts/gen_cli_docs.py
"""

from __future__ import annotations

import difflib
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(60)

# script -> directory its output is committed in
GENERATORS = {
    "scripts/gen_completions.py": "completions",
    "scripts/gen_man.py": "man",
    "scripts/gen_cli_docs.py": "docs",
}


def _load(script: str):
    path = ROOT / script
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script", sorted(GENERATORS))
def test_committed_files_match_the_generator(script, tmp_path):
    written = _load(script).generate(tmp_path)
    assert written, f"{script} wrote nothing"
    problems = []
    for fresh in written:
        committed = ROOT / GENERATORS[script] / fresh.name
        if not committed.exists():
            problems.append(f"{committed.relative_to(ROOT)} is missing")
            continue
        new, old = fresh.read_text(encoding="utf-8"), committed.read_text(encoding="utf-8")
        if new != old:
            diff = "".join(
                list(
                    difflib.unified_diff(
                        old.splitlines(keepends=True),
                        new.splitlines(keepends=True),
                        f"committed/{committed.relative_to(ROOT)}",
                        "regenerated",
                    )
                )[:40]
            )
            problems.append(f"{committed.relative_to(ROOT)} differs from the code:\n{diff}")
    assert not problems, f"run `python3 {script}` and commit the result.\n" + "\n".join(problems)


def test_generators_are_deterministic(tmp_path):
    for script in GENERATORS:
        module = _load(script)
        first = {p.name: p.read_text() for p in module.generate(tmp_path / "a")}
        second = {p.name: p.read_text() for p in module.generate(tmp_path / "b")}
        assert first == second, script


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff is not installed (apt-get install groff-base)")
def test_man_page_renders_without_warnings():
    out = subprocess.run(
        ["groff", "-ww", "-man", "-Tutf8", str(ROOT / "man/foundation.1")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0
    assert out.stderr == "", out.stderr
    text = re.sub(".\b", "", out.stdout)  # undo overstrike bold/underline
    for section in ("NAME", "SYNOPSIS", "GLOBAL OPTIONS", "EXIT STATUS", "ENVIRONMENT", "FILES"):
        assert section in text
