#!/usr/bin/env python3
"""Generate ``man/foundation.1`` (roff, man macros) from the click command tree.

One page, one section per command panel (as ``foundation --help`` groups
them), a subsection per command with its synopsis, description, options and
examples. EXIT STATUS comes from :class:`foundation_cli.errors.ExitStatus`.
Deterministic: no date from the clock, only the package version.

Usage: python3 scripts/gen_man.py [OUTDIR]   (default: man/)
Check: MANWIDTH=80 man -l man/foundation.1; groff -ww -man -Tutf8 man/foundation.1 >/dev/null
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT))

import clitree  # noqa: E402

# Meaning of each exit status (the names come from ExitStatus; the words from errors.py's tree).
EXIT_MEANINGS = {
    "OK": "Success.",
    "FAILURE": "The command failed (a Consul error, a failed remote command, anything not listed below).",
    "USAGE": "Bad input: unknown command or option, invalid value, or a foundation.yaml problem (reported as file:line:col).",
    "UNREACHABLE": "Consul, an SSH host or the network could not be reached, or the cluster has no leader.",
    "PERMISSION_DENIED": "Refused: Consul ACL token (HTTP 403), SSH authentication or sudo.",
    "NOT_FOUND": "The key, service, node, channel or host does not exist.",
    "CONFLICT": "Check-and-set lost, a mode change refused, or a name already taken.",
    "PARTIAL": "Some hosts or nodes failed while others succeeded; the output says which.",
    "INTERRUPTED": "Interrupted (Ctrl-C).",
}

ENVIRONMENT = [
    (
        "CONSUL_HTTP_ADDR",
        "Consul HTTP API address (host:port or http(s)://host:port), as for the consul CLI. Same as --consul-addr.",
    ),
    ("CONSUL_HTTP_TOKEN", "Consul ACL token. Same as --token. Never printed: shown commands use $CONSUL_HTTP_TOKEN."),
    ("CONSUL_HTTP_TOKEN_FILE", "File holding the ACL token, used when CONSUL_HTTP_TOKEN is not set."),
    ("CONSUL_HTTP_SSL", "If true, a scheme-less address means https."),
    ("CONSUL_CACERT", "CA certificate file used to verify Consul's TLS certificate."),
    ("CONSUL_CLIENT_CERT", "Client certificate file for TLS client authentication (with CONSUL_CLIENT_KEY)."),
    ("CONSUL_CLIENT_KEY", "Client key file for TLS client authentication."),
    ("CONSUL_HTTP_SSL_VERIFY", "If false, do not verify Consul's TLS certificate."),
    ("NO_COLOR", "If set (to anything), no colour in any output; same as --no-color."),
    ("COLUMNS", "Width used for help and tables."),
    ("FOUNDATION_STATE_DIR", "Directory of the local cluster state file (default: $XDG_STATE_HOME/foundation)."),
    (
        "FOUNDATION_DATA_DIR",
        "Data directory of the local one-node cluster (foundation up --local) and of the node agent.",
    ),
    ("FOUNDATION_NODE", "Node name the node agent (foundation agent run) uses; foundation up sets it on every host."),
    (
        "FOUNDATION_MDNS_INTERFACE",
        "Interface(s), comma-separated, for mDNS (advertise, discover-hosts, the mdns strategy). "
        "Foundation never multicasts on an interface nobody named.",
    ),
    (
        "FOUNDATION_CHANNEL, FOUNDATION_MESSAGE_ID, FOUNDATION_SENDER, FOUNDATION_CONTENT_TYPE, FOUNDATION_EVENT_ID",
        "Set for the command foundation listen --exec runs per message (the payload is on its stdin).",
    ),
    ("XDG_STATE_HOME", "Base of the state directory (default: ~/.local/state)."),
    ("XDG_DATA_HOME", "Base of the local cluster's data directory (default: ~/.local/share)."),
    ("XDG_CONFIG_HOME", "Base of the configuration directory searched for foundation.yaml (default: ~/.config)."),
]

FILES = [
    (
        "./foundation.yaml",
        "Cluster configuration (hosts, SSH user, servers, per-host overrides). Looked up in the current "
        "directory, then in $XDG_CONFIG_HOME/foundation/foundation.yaml; --config names another. "
        "No file at all is fine: Foundation discovers hosts and uses defaults.",
    ),
    (
        "$XDG_STATE_HOME/foundation/state.json",
        "Local cluster state written by foundation up (mode 0600; it may hold the operator ACL token): "
        "the Consul address and token later commands use when no flag or environment variable gives them. "
        "Default ~/.local/state/foundation/state.json; $FOUNDATION_STATE_DIR overrides the directory.",
    ),
]


def esc(text: str) -> str:
    """Escape text for roff: backslashes, hyphens, and control characters at line starts."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = []
    for line in text.split("\n"):
        if line.startswith((".", "'")):
            line = "\\&" + line
        lines.append(line)
    return "\n".join(lines)


def quote(text: str) -> str:
    """A macro argument in double quotes (roff doubles an inner quote)."""
    return '"' + esc(text).replace('"', '""') + '"'


def _options(out: list[str], options: list[clitree.Option]) -> None:
    for opt in options:
        out.append(".TP")
        out.append(f"\\fB{esc(opt.names)}\\fR")
        out.append(esc(opt.help) if opt.help else "\\&")


def _examples(out: list[str], examples: list[str]) -> None:
    if not examples:
        return
    out.append(".PP")
    out.append("Example:")
    out.append(".RS 4")
    out.append(".nf")
    out.extend(esc(e) for e in examples)
    out.append(".fi")
    out.append(".RE")


def _command(out: list[str], cmd: clitree.Command) -> None:
    out.append(f".SS {quote(cmd.name)}")
    out.append(f"\\fB{esc(cmd.synopsis)}\\fR")
    for para in cmd.paragraphs:
        out.append(".PP")
        out.append(esc(para))
    if cmd.arguments:
        out.append(".PP")
        out.append("Arguments:")
        for arg in cmd.arguments:
            out.append(".TP")
            out.append(f"\\fI{esc(arg.synopsis)}\\fR")
            out.append(esc(arg.help) if arg.help else "\\&")
    if cmd.options:
        out.append(".PP")
        out.append("Options:")
        _options(out, cmd.options)
    if cmd.is_group and cmd.children:
        out.append(".PP")
        out.append("Commands: " + esc(", ".join(c.path[-1] for c in cmd.children)) + ".")
    _examples(out, cmd.examples)


def render(root: clitree.Command, version: str) -> str:
    """The whole page as roff text."""
    from foundation_cli.errors import ExitStatus

    out: list[str] = [
        '.\\" Generated by scripts/gen_man.py from the foundation command tree; do not edit.',
        f'.TH FOUNDATION 1 "" "foundation {esc(version)}" "Foundation Manual"',
        ".nh",
        ".ad l",
        ".SH NAME",
        "foundation \\- " + esc(root.paragraphs[0] if root.paragraphs else "cluster tool"),
        ".SH SYNOPSIS",
        "\\fBfoundation\\fR [\\fIGLOBAL OPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGS\\fR]...",
        ".br",
        "\\fBfoundation\\fR \\fICOMMAND\\fR \\fB\\-\\-help\\fR",
        ".SH DESCRIPTION",
    ]
    for para in root.paragraphs[1:]:
        out.append(esc(para))
        out.append(".PP")
    out.append(
        "Global options may be given before or after the command name. Each command's "
        "\\fB\\-\\-help\\fR fits a screen and ends with an example; this page has them all."
    )
    _examples(out, root.examples)
    out.append(".SH GLOBAL OPTIONS")
    _options(out, root.options)
    for panel, commands in clitree.panels(root):
        out.append(f".SH {quote(panel.upper() + ' COMMANDS')}")
        for top in commands:
            for cmd in top.walk():
                _command(out, cmd)
    out.append(".SH EXIT STATUS")
    for status in ExitStatus:
        out.append(".TP")
        out.append(f"\\fB{int(status)}\\fR")
        out.append(esc(f"{status.name.lower().replace('_', ' ')}: {EXIT_MEANINGS.get(status.name, '')}".strip()))
    out.append(".SH ENVIRONMENT")
    for name, text in ENVIRONMENT:
        out.append(".TP")
        out.append(f"\\fB{esc(name)}\\fR")
        out.append(esc(text))
    out.append(".SH FILES")
    for name, text in FILES:
        out.append(".TP")
        out.append(f"\\fI{esc(name)}\\fR")
        out.append(esc(text))
    out.append(".SH SEE ALSO")
    out.append("\\fBconsul\\fR(1), \\fBssh\\fR(1); the docs/ directory of the Foundation source (docs/index.md).")
    return "\n".join(out) + "\n"


def generate(outdir: Path) -> list[Path]:
    from foundation_cli import __version__

    outdir.mkdir(parents=True, exist_ok=True)
    path = outdir / "foundation.1"
    path.write_text(render(clitree.load_tree(), __version__), encoding="utf-8")
    return [path]


def main(argv: list[str]) -> int:
    outdir = Path(argv[1]) if len(argv) > 1 else ROOT / "man"
    for path in generate(outdir):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
