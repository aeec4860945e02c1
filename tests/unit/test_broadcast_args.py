"""`broadcast` MESSAGE forms that never reach Consul: a bad @FILE is one usage line naming the message."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from foundation_cli.commands.app import app


@pytest.mark.parametrize("message", ["@a\x00b", "@\x01", "@/nonexistent/file"])
def test_an_unreadable_at_file_is_a_usage_error_naming_the_message(message: str) -> None:
    result = CliRunner().invoke(app, ["broadcast", "ch", message])
    assert result.exit_code == 2 and result.output.startswith("error: message @FILE "), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
