"""Walk the ``foundation`` click command tree into plain data for the generators.

The man page (``gen_man.py``), the command reference (``gen_cli_docs.py``) and
the tests that check every command's help all read the same tree, so they can
never disagree with the code. Everything here is deterministic: commands keep
their registration order (the order ``commands/app.py`` wires them), and no
value depends on the clock, the terminal or the machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# Rich markup Foundation's help texts use ("[bold]--explain[/bold]", "[cyan]…[/cyan]").
_MARKUP = re.compile(
    r"\[/?(?:bold|dim|italic|underline|cyan|red|green|yellow|blue|magenta|white|b|i|u)(?: [a-z ]+)?\]|\[/\]"
)
_EXAMPLE = re.compile(r"^\s*Examples?:\s*(.*)$")


def plain(text: str | None) -> str:
    """Help text without rich markup or click's ``\\b`` no-rewrap markers."""
    text = _MARKUP.sub("", text or "")
    return "\n".join(line for line in text.splitlines() if line.strip() != "\b").strip()


@dataclass
class Option:
    """One option as ``--help`` shows it: ``-c, --config <str>`` and its help."""

    names: str
    help: str
    envvar: str | None = None


@dataclass
class Argument:
    name: str
    help: str
    required: bool
    variadic: bool

    @property
    def synopsis(self) -> str:
        text = self.name + ("..." if self.variadic else "")
        return text if self.required else f"[{text}]"


@dataclass
class Command:
    """A command or group, with its help split into prose and examples."""

    path: tuple[str, ...]
    summary: str
    paragraphs: list[str]
    examples: list[str]
    arguments: list[Argument] = field(default_factory=list)
    options: list[Option] = field(default_factory=list)
    panel: str = "Commands"
    is_group: bool = False
    children: list[Command] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(self.path)

    @property
    def synopsis(self) -> str:
        parts = [self.name]
        if self.is_group:
            parts.append("COMMAND [ARGS]...")
            return " ".join(parts)
        if self.options:
            parts.append("[OPTIONS]")
        parts.extend(a.synopsis for a in self.arguments)
        return " ".join(parts)

    def walk(self):
        """This command, then every descendant, depth first in registration order."""
        yield self
        for child in self.children:
            yield from child.walk()


def split_help(text: str) -> tuple[list[str], list[str]]:
    """Split help text into prose paragraphs and example command lines."""
    paragraphs: list[str] = []
    examples: list[str] = []
    for block in re.split(r"\n\s*\n", plain(text)):
        lines = [line.strip() for line in block.splitlines() if line.strip()]
        if not lines:
            continue
        prose: list[str] = []
        in_examples = False
        for line in lines:
            match = _EXAMPLE.match(line)
            if match:
                in_examples = True
                if match.group(1):
                    examples.append(match.group(1).strip())
            elif in_examples and (line.startswith("foundation ") or line.startswith("$ ")):
                examples.append(line.removeprefix("$ ").strip())
            else:
                in_examples = False
                prose.append(line)
        if prose:
            paragraphs.append(" ".join(prose))
    return paragraphs, examples


def _options(cmd: Any, ctx: Any) -> tuple[list[Argument], list[Option]]:
    arguments: list[Argument] = []
    options: list[Option] = []
    is_root = ctx.parent is None
    for param in cmd.params:
        if getattr(param, "hidden", False) and not is_root:
            continue
        if param.param_type_name == "argument":
            name = (param.metavar or param.name or "").upper().strip("{}")
            arguments.append(
                Argument(
                    name=name,
                    help=plain(getattr(param, "help", "") or ""),
                    required=bool(param.required),
                    variadic=param.nargs == -1,
                )
            )
            continue
        hidden = getattr(param, "hidden", False)
        param.hidden = False  # the root's global options are hidden in --help only to keep it on one screen
        record = param.get_help_record(ctx)
        param.hidden = hidden
        if record is None:
            continue
        names, help_text = record
        envvar = param.envvar if isinstance(param.envvar, str) else None
        options.append(Option(names=plain(names), help=" ".join(plain(help_text).split()), envvar=envvar))
    # --help is always there; list it last like click does.
    return arguments, options


def _build(cmd: Any, path: tuple[str, ...], ctx: Any) -> Command:
    paragraphs, examples = split_help(cmd.help or "")
    summary = paragraphs[0] if paragraphs else ""
    if len(summary) > 80 and ". " in summary:
        summary = summary.split(". ")[0] + "."
    arguments, options = _options(cmd, ctx)
    node = Command(
        path=path,
        summary=summary,
        paragraphs=paragraphs,
        examples=examples,
        arguments=arguments,
        options=options,
        panel=getattr(cmd, "rich_help_panel", None) or "Commands",
        is_group=hasattr(cmd, "list_commands"),
    )
    if node.is_group:
        # Registration order (dict insertion), not alphabetical: it is the order app.py tells the story in.
        for name, sub in cmd.commands.items():
            if getattr(sub, "hidden", False):
                continue
            sub_ctx = sub.context_class(sub, info_name=name, parent=ctx)
            node.children.append(_build(sub, path + (name,), sub_ctx))
    return node


def load_tree() -> Command:
    """The whole ``foundation`` command tree, built from the Typer app."""
    import typer.main

    from foundation_cli.commands.app import app

    root = typer.main.get_command(app)
    ctx = root.context_class(root, info_name="foundation")
    return _build(root, ("foundation",), ctx)


def panels(root: Command) -> list[tuple[str, list[Command]]]:
    """Top-level commands grouped by their help panel, panels in first-registration order."""
    grouped: dict[str, list[Command]] = {}
    for child in root.children:
        grouped.setdefault(child.panel, []).append(child)
    return list(grouped.items())
