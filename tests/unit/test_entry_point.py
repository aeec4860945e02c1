"""The console-script entry point (commands/app.py ``main``): how the process ends.

``main`` ends the process with ``os._exit`` after the command instead of letting Python tear the
interpreter down; these tests check that nothing a normal exit does for the user is lost: the exit
status, buffered output, ``atexit`` handlers, other threads' work.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

from foundation_cli.commands import app as app_module


def _run(body: str) -> subprocess.CompletedProcess[str]:
    code = "import sys\nfrom foundation_cli.commands.app import _exit\n" + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_status_buffered_output_and_atexit_handlers_survive(tmp_path):
    marker = tmp_path / "atexit-ran"
    proc = _run(
        f"""
        import atexit
        atexit.register(lambda: open({str(marker)!r}, "w").write("yes"))
        sys.stdout.write("no newline, still in the buffer")
        sys.stderr.write("err")
        _exit(3)
        """
    )
    assert proc.returncode == 3
    assert proc.stdout == "no newline, still in the buffer"
    assert proc.stderr == "err"
    assert marker.read_text() == "yes"


def test_none_and_zero_are_success():
    assert _run("_exit(None)").returncode == 0
    assert _run("_exit(0)").returncode == 0


def test_a_message_as_status_is_printed_like_sys_exit():
    proc = _run("_exit('error: something')")
    assert proc.returncode == 1
    assert proc.stderr.strip() == "error: something"


def test_another_thread_still_finishes_its_work():
    proc = _run(
        """
        import threading, time
        def late():
            time.sleep(0.3)
            print("thread done", flush=True)
        threading.Thread(target=late).start()
        _exit(0)
        """
    )
    assert proc.returncode == 0
    assert "thread done" in proc.stdout


def test_stack_room_returns_and_raises_like_a_plain_call():
    assert app_module._with_stack_room(lambda: 42) == 42

    def deep(n: int) -> int:
        return 0 if n == 0 else 1 + deep(n - 1)

    assert app_module._with_stack_room(lambda: deep(500)) == 500
    try:
        app_module._with_stack_room(lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    else:  # pragma: no cover
        raise AssertionError("the exception was lost")


def test_the_real_command_exits_with_its_status():
    proc = subprocess.run(
        [sys.executable, "-m", "foundation_cli", "kv", "get"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2  # usage error: missing KEY
    assert proc.stderr.startswith("error:")
