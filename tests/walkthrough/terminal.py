"""A real terminal for the new-user walkthrough: tmux types, the screen is read back.

Each command is typed with ``send-keys`` into an interactive bash on a 120x50
tmux pane; bash prints ``[exit N]`` before every prompt, so the screen itself
says how the command ended. :meth:`Terminal.run` clears the screen first and
returns what a person would see, the exit status, and how long the answer took
(from the Enter key to the ``[exit N]`` line).
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

PROMPT = "$ "
_EXIT = re.compile(r"^\[exit (\d+)\]$")


@dataclass
class Screen:
    """What the terminal showed for one command."""

    command: str
    text: str  # the screen from the typed command to the [exit N] line, trailing blanks removed
    exit_status: int
    seconds: float

    @property
    def answer(self) -> list[str]:
        """The lines the command printed (without the typed command and the exit line)."""
        lines = self.text.splitlines()
        return [line for line in lines[1:-1] if line.strip()]


class Terminal:
    """An interactive bash in a private tmux server (its own socket), killed by :meth:`close`."""

    def __init__(self, cwd: Path, env: dict[str, str], *, width: int = 120, height: int = 50) -> None:
        self.socket = f"fw-{uuid.uuid4().hex[:8]}"
        self.cwd = cwd
        rc = cwd / ".walkthrough-bashrc"
        rc.write_text(
            f"PS1={shlex.quote(PROMPT)}\n"
            "PROMPT_COMMAND='printf \"[exit %s]\\n\" $?'\n"
            "unset HISTFILE\n"
            "stty -echoctl 2>/dev/null\n"  # Ctrl-C shows nothing but its effect
        )
        self.env = {**env, "TERM": "xterm-256color"}
        self._tmux(
            "new-session",
            "-d",
            "-s",
            "w",
            "-x",
            str(width),
            "-y",
            str(height),
            "-c",
            str(cwd),
            f"bash --noprofile --rcfile {shlex.quote(str(rc))} -i",
        )
        self._tmux("set-option", "-t", "w", "history-limit", "5000")
        self._wait_for_prompt(time.monotonic() + 10)

    def _tmux(self, *args: str, check: bool = True) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def screen(self) -> str:
        """The whole pane plus its scroll-back, as plain text."""
        return self._tmux("capture-pane", "-p", "-J", "-t", "w", "-S", "-5000")

    def _wait_for_prompt(self, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.screen().rstrip().endswith(PROMPT.rstrip()):
                return
            time.sleep(0.05)
        raise TimeoutError(f"no prompt; the screen shows:\n{self.screen()}")

    def clear(self) -> None:
        self._tmux("send-keys", "-t", "w", "clear", "Enter")
        time.sleep(0.2)
        self._wait_for_prompt(time.monotonic() + 5)
        self._tmux("clear-history", "-t", "w")

    def type(self, command: str) -> float:
        """Type ``command`` and press Enter; return the monotonic time of the Enter."""
        self._tmux("send-keys", "-t", "w", "-l", command)
        self._tmux("send-keys", "-t", "w", "Enter")
        return time.monotonic()

    def wait_for(self, pattern: str, timeout: float) -> str:
        """Wait until the screen matches ``pattern`` (a regex); return the screen."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern, re.M)
        while time.monotonic() < deadline:
            text = self.screen()
            if rx.search(text):
                return text
            time.sleep(0.05)
        raise TimeoutError(f"{pattern!r} did not appear within {timeout}s; the screen shows:\n{self.screen()}")

    def interrupt(self) -> None:
        self._tmux("send-keys", "-t", "w", "C-c")

    def finish(self, command: str, started: float, timeout: float) -> Screen:
        """Wait for the ``[exit N]`` line after ``command`` and return the screen."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            lines = [line.rstrip() for line in text.splitlines()]
            typed = PROMPT + command.splitlines()[0][:40]
            start = next((i for i, line in enumerate(lines) if line.startswith(typed.rstrip())), None)
            for i, line in enumerate(lines):
                m = _EXIT.match(line)
                if m and start is not None and i > start:
                    seconds = time.monotonic() - started
                    shown = "\n".join(lines[start : i + 1]).strip("\n")
                    return Screen(command=command, text=shown, exit_status=int(m.group(1)), seconds=seconds)
            if time.monotonic() > deadline:
                raise TimeoutError(f"{command!r} did not finish within {timeout}s; the screen shows:\n{text}")
            time.sleep(0.03)

    def run(self, command: str, *, timeout: float = 120) -> Screen:
        """Clear the screen, type ``command``, wait for it to end; return what was shown."""
        self.clear()
        return self.finish(command, self.type(command), timeout)

    def close(self) -> None:
        self._tmux("kill-server", check=False)
        rc = self.cwd / ".walkthrough-bashrc"
        if rc.exists():
            os.unlink(rc)
