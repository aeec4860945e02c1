"""What reaches the terminal from hosts, KV and events: escape sequences shown, never played (issue 12)."""

from __future__ import annotations

import io

import pytest

from foundation_cli.commands.output import Output, dumps
from foundation_cli.errors import FoundationError, UsageError
from foundation_cli.facades.instance_logs import check_log_path
from foundation_cli.settings import Settings

HOSTILE = "ok\x1b]0;pwned\x07\x1b[2J\x9b31m\rX\x00"


def _out() -> tuple[Output, io.StringIO, io.StringIO]:
    out, err = io.StringIO(), io.StringIO()
    return Output(Settings(), stdout=out, stderr=err), out, err


def test_lines_errors_warnings_and_tables_escape_control_characters():
    o, out, err = _out()
    o.line(HOSTILE + "\nsecond\tline")
    o.info(HOSTILE)
    o.warn(HOSTILE)
    o.error(FoundationError(HOSTILE, hint=HOSTILE))
    o.table(("A",), [(HOSTILE,), ("[bold]not markup[/bold]",)])
    text = out.getvalue() + err.getvalue()
    for raw in ("\x1b", "\x07", "\x9b", "\r", "\x00"):
        assert raw not in text
    assert "ok\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m\\x0dX\\x00" in text
    assert "second\tline" in text and "[bold]not markup[/bold]" in text


def test_json_output_escapes_c1_and_del():
    assert "\x9b" not in dumps({"v": HOSTILE}) and "\\u009b" in dumps({"v": HOSTILE})


@pytest.mark.parametrize(
    "path",
    [
        "/var/lib/foundation/nodes/n1/services/web/output.log",
        "/root/.local/share/foundation/nodes/n1/services/web/output.log",
    ],
)
def test_an_agents_instance_log_is_readable(path):
    assert check_log_path(path, "n1", "web") == path


@pytest.mark.parametrize(
    "path",
    [
        "/etc/shadow",
        "/root/.ssh/id_ed25519",
        "/var/lib/foundation/nodes/n1/services/web/../../../../../etc/shadow",
        "/var/lib/foundation/nodes/n1/services/web/../web/output.log",
        "/var/lib/foundation/nodes/n2/services/web/output.log",
        "/var/lib/foundation/nodes/n1/services/db/output.log",
        "/var/lib/foundation/nodes/n1/services/web/output.log\n/etc/shadow",
        "relative/nodes/n1/services/web/output.log",
        "/var/lib/foundation/nodes/n1/services/web/output.log.1",
        "nodes/n1/services/web/output.log",
    ],
)
def test_logs_refuses_any_other_path_kv_names(path):
    with pytest.raises(UsageError, match="not an agent's instance log"):
        check_log_path(path, "n1", "web")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_value_is_exact_in_a_pipe_and_escaped_on_a_terminal():
    tty = _Tty()
    Output(Settings(), stdout=tty, stderr=io.StringIO()).value(b"v\x1b[2J\n")
    assert tty.getvalue() == "v\\x1b[2J\n"
    pipe = io.StringIO()
    Output(Settings(), stdout=pipe, stderr=io.StringIO()).value(b"v\x1b[2J\n")
    assert pipe.getvalue() == "v\x1b[2J\n"
