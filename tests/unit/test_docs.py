"""The docs read on their own: links resolve, anchors exist, every exit code is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from foundation_cli.errors import ExitStatus

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
pytestmark = pytest.mark.timeout(30)


def _anchors(path: Path) -> set[str]:
    """GitHub-style heading anchors of a Markdown file."""
    out = set()
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        if in_code or not line.startswith("#"):
            continue
        title = line.lstrip("#").strip().lower()
        out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


def _links(path: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", path.read_text(encoding="utf-8"), flags=re.DOTALL)
    return LINK.findall(text)


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_relative_links_resolve(page):
    path = DOCS / page
    broken = []
    for target in _links(path):
        if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (path.parent / file_part).resolve() if file_part else path
        if not dest.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"docs/{page}: broken links: " + ", ".join(broken)


def test_every_exit_status_is_documented():
    text = (DOCS / "exit-codes.md").read_text(encoding="utf-8")
    for status in ExitStatus:
        assert re.search(rf"^\| {int(status)} \| {status.name} \|", text, re.MULTILINE), status.name


def _command_lines(path: Path) -> list[str]:
    """`foundation …` command lines in a page's code blocks: `$ `-prompted lines anywhere, bare
    lines in bash/sh blocks (plain and console blocks also hold output, so only prompted lines count)."""
    lines: list[str] = []
    lang: str | None = None
    in_screen = False  # a walkthrough screen was typed for real (mistakes included): not checked here
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("<!-- screen: ") or raw.startswith("<!-- /screen -->"):
            in_screen = raw.startswith("<!-- screen: ")
            continue
        if in_screen:
            continue
        if raw.startswith("```"):
            lang = None if lang is not None else raw[3:].strip()
            continue
        if lang is None:
            continue
        line = raw.strip()
        if line.startswith("$ "):
            line = line[2:]
        elif lang not in ("bash", "sh", "shell"):
            continue
        if not (line.startswith("foundation ") or re.match(r"^[A-Z_]+=\S+ foundation ", line)):
            continue
        lines.append(line.split(" #", 1)[0].split(" | ", 1)[0].split(" > ", 1)[0].strip())
    return lines


def _check_command_line(line: str) -> str | None:
    """None if ``line`` names real commands and options, else what is wrong."""
    import shlex

    import typer.main

    from foundation_cli.commands.app import app

    root = typer.main.get_command(app)
    try:
        words = shlex.split(line)
    except ValueError:
        return f"cannot parse: {line}"
    while words and "=" in words[0] and not words[0].startswith("-"):
        words.pop(0)

    def opts(cmd) -> set[str]:
        return {o for p in cmd.params for o in list(getattr(p, "opts", [])) + list(getattr(p, "secondary_opts", []))}

    cmd, i, known = root, 1, opts(root) | {"--help", "-h"}
    while hasattr(cmd, "list_commands") and i < len(words) and not words[i].startswith("-"):
        if words[i] not in cmd.commands:
            return f"no command {words[i]!r} in: {line}"
        cmd, i = cmd.commands[words[i]], i + 1
    settings = getattr(cmd, "context_settings", None) or {}
    if settings.get("ignore_unknown_options") or settings.get("allow_extra_args"):
        return None
    known |= opts(cmd)
    for word in words[i:]:
        if word == "--":
            break
        if word.startswith("-") and word != "-" and word.split("=", 1)[0] not in known:
            return f"no option {word} in: {line}"
    return None


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.md")))
def test_commands_in_the_docs_exist(page):
    problems = [p for p in (_check_command_line(line) for line in _command_lines(DOCS / page)) if p]
    assert not problems, f"docs/{page}: " + "; ".join(problems)
