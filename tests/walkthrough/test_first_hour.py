"""The first hour, as a new user lives it: typed into a real terminal (tmux), read off the screen.

Install (a venv, offline), the README's demo, ``init``, ``up`` on three lab
hosts, a singleton, a broadcast, ``status`` — and the ten mistakes a new user
makes most. Each mistake must be answered with one ``error:`` line saying what
happened and one ``hint:`` line saying what to do, with the right exit status,
and leave nothing half-done (the next right command works).

How long each answer took is measured (Enter to ``[exit N]``) and printed in the
summary, not asserted: figures belong to docs, not to pass/fail. With
``FOUNDATION_WALKTHROUGH_SCREENS=DIR`` every screen is written to ``DIR`` (see
``scripts/walkthrough_screens.py``, which refreshes ``docs/walkthrough/`` and the
screens shown in ``docs/getting-started.md``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.lab.netns import Lab
from tests.walkthrough.terminal import Screen, Terminal

pytestmark = [pytest.mark.lab, pytest.mark.timeout(600)]

CHECKOUT = Path(__file__).resolve().parents[2]
SCREENS = os.environ.get("FOUNDATION_WALKTHROUGH_SCREENS")


class Walk:
    """The terminal, the lab and the screens kept so far."""

    def __init__(self, term: Terminal, lab: Lab, home: Path) -> None:
        self.term = term
        self.lab = lab
        self.home = home
        self.screens: list[tuple[str, Screen]] = []

    def run(self, name: str, command: str, *, timeout: float = 180) -> Screen:
        screen = self.term.run(command, timeout=timeout)
        self.keep(name, screen)
        return screen

    def keep(self, name: str, screen: Screen) -> None:
        self.screens.append((name, screen))
        if SCREENS:
            Path(SCREENS).mkdir(parents=True, exist_ok=True)
            Path(SCREENS, f"{name}.txt").write_text(_normalize(self, screen.text) + "\n")

    def mistake(self, name: str, command: str, *, status: int, says: str, timeout: float = 60) -> Screen:
        """A wrong command: one error line naming what happened, one hint line, the right exit status."""
        screen = self.run(name, command, timeout=timeout)
        answer = screen.answer
        assert screen.exit_status == status, screen.text
        errors = [line for line in answer if line.startswith("error: ")]
        hints = [line for line in answer if line.startswith("hint: ")]
        assert len(errors) == 1 and len(hints) == 1, screen.text
        assert re.search(says, errors[0]), screen.text
        assert "Traceback" not in screen.text and "internal error" not in screen.text, screen.text
        return screen


def _normalize(walk: Walk, text: str) -> str:
    """Screens for docs: the lab's addresses and temp paths as a reader's would look."""
    text = text.replace(str(walk.home), "~/demo")
    for i, h in enumerate(walk.lab.hosts):
        shown = f"192.0.2.{11 + i}"
        # Keep table columns aligned: a cell followed by padding keeps its width.
        pad = " " * max(0, len(h.ip) - len(shown))
        text = re.sub(re.escape(h.ip) + r"(\S*)(?=  )", lambda m, s=shown, p=pad: s + m.group(1) + p, text)
        text = text.replace(h.ip, shown)
    text = re.sub(r"\bpid \d+", "pid 4242", text)
    return text


def _copy_checkout(dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=CHECKOUT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for rel in filter(None, (f.decode() for f in files)):
        src = CHECKOUT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)


def _yaml(lab: Lab, hosts, *, known_hosts: str | None = None, identity: str | None = None) -> str:
    lines = "".join(f"  - {h.ip}\n" for h in hosts)
    return (
        f"hosts:\n{lines}ssh:\n  user: root\n  identity_file: {identity or lab.ssh_key}\n"
        f"  known_hosts: {known_hosts or lab.known_hosts}\n  connect_timeout: 1\n"
    )


@pytest.fixture(scope="module")
def walk(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the lab needs root")
    if shutil.which("tmux") is None:
        pytest.fail("tmux is missing: scripts/install-test-deps.sh installs it")
    import socket

    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", 8500)) == 0:
            # The demo's cluster and the "no cluster running" answers need the default address to be free.
            pytest.fail("127.0.0.1:8500 is in use (another local cluster?): the walkthrough runs the README demo there")
    home = tmp_path_factory.mktemp("first-hour")
    project = home / "foundation"
    _copy_checkout(project)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CONSUL_", "FOUNDATION_", "PYTEST"))}
    env.update(
        HOME=str(home),
        FOUNDATION_STATE_DIR=str(home / "state"),
        FOUNDATION_DATA_DIR=str(home / "local"),
        XDG_CONFIG_HOME=str(home / "xdg"),
        PATH=f"{project}/.venv/bin:" + env.get("PATH", "/usr/bin:/bin"),
        # The package under test stays importable even when the lab hosts look for it.
        PYTHONDONTWRITEBYTECODE="1",
    )
    lab = Lab(5)
    term = Terminal(project, env)
    w = Walk(term, lab, home)
    try:
        yield w
    finally:
        term.close()
        subprocess.run(
            [sys.executable, "-m", "foundation_cli", "down", "--local", "--purge"],
            env=env,
            cwd=project,
            capture_output=True,
            timeout=60,
            check=False,
        )
        lab.close()
        if w.screens:
            print("\nfirst-hour answers (Enter to [exit N]):")
            for name, s in w.screens:
                print(f"  {name:<28} exit {s.exit_status:<3} {s.seconds:6.2f} s")


def test_install_and_the_demo(walk: Walk):
    """README: install into a venv, then `bash scripts/demo.sh` (a local cluster, its work, its status)."""
    # The dependencies come from this machine's site-packages (no download), the package itself is installed anew.
    install = walk.run(
        "install",
        "python3 -m venv --system-site-packages .venv && .venv/bin/pip install -q --no-deps -e . "
        "&& foundation --version",
    )
    assert install.exit_status == 0, install.text
    assert re.search(r"^foundation \d", install.text, re.M), install.text
    demo = walk.run("demo", "bash scripts/demo.sh", timeout=240)
    assert demo.exit_status == 0, demo.text
    for expected in ("demo-clock running on", "Done. The cluster keeps running"):
        assert expected in demo.text, demo.text
    stop = walk.run("down-local", "foundation down --local --purge")
    assert stop.exit_status == 0, stop.text


def test_typo_in_a_command_and_an_option(walk: Walk):
    walk.mistake("typo-command", "foundation stauts", status=2, says="stauts")
    walk.mistake("typo-option", "foundation ps --jsn", status=2, says="--jsn")


def test_stopped_cluster_and_wrong_address(walk: Walk):
    # The local cluster was stopped above: nothing answers on the default address.
    walk.mistake("stopped-cluster", "foundation ps", status=3, says="cannot reach Consul")
    walk.mistake("wrong-address", "foundation ps --consul-addr 127.0.0.1:9", status=3, says="127.0.0.1:9")


def test_init_and_up_on_three_hosts(walk: Walk):
    init = walk.run("init", "foundation init")
    assert init.exit_status == 0 and "wrote foundation.yaml" in init.text, init.text
    (walk.term.cwd / "foundation.yaml").write_text(_yaml(walk.lab, walk.lab.hosts[:3]))
    up = walk.run("up", "foundation up", timeout=240)
    assert up.exit_status == 0, up.text
    for h in walk.lab.hosts[:3]:
        assert h.ip in up.text or h.name in up.text, up.text


def test_yaml_typo(walk: Walk):
    broken = walk.term.cwd / "broken.yaml"
    broken.write_text(_yaml(walk.lab, walk.lab.hosts[:3]).replace("  user: root", "  user root"))
    walk.mistake("yaml-typo", "foundation up -c broken.yaml", status=2, says=r"broken\.yaml:\d+")


def test_a_singleton_and_a_command_that_exits_at_once(walk: Walk):
    ok = walk.run("singleton", "foundation start-singleton clock -- sh -c 'while true; do date; sleep 5; done'")
    assert ok.exit_status == 0 and "clock running on" in ok.text, ok.text
    walk.mistake(
        "exits-at-once",
        "foundation start-singleton web -- python3 -m http.server --bogus",
        status=1,
        says="web keeps exiting on .*: exit status 2",
    )
    assert any("unrecognized arguments: --bogus" in line for line in walk.screens[-1][1].answer)
    # Nothing half-done: the spec can be stopped like any other.
    stop = walk.run("stop-web", "foundation stop web")
    assert stop.exit_status == 0, stop.text


def test_service_that_does_not_exist(walk: Walk):
    walk.mistake("no-such-service", "foundation logs nosuch", status=5, says="nosuch")


def test_a_broadcast_and_status(walk: Walk):
    term = walk.term
    term.clear()
    command = "foundation listen hello --count 1 --timeout 30s & sleep 1; foundation broadcast hello hi; wait"
    screen = term.finish(command, term.type(command), 60)
    walk.keep("broadcast", screen)
    assert screen.exit_status == 0 and "hi" in screen.text, screen.text
    status = walk.run("status", "foundation status")
    assert status.exit_status == 0, status.text


def test_hosts_that_refuse_us(walk: Walk):
    """A new host added to foundation.yaml fails alone: the others stay as they are (exit 7)."""
    lab = walk.lab
    yaml_file = walk.term.cwd / "foundation.yaml"
    three = lab.hosts[:3]
    refusing, other = lab.hosts[3], lab.hosts[4]
    # A host whose authorized_keys does not hold our key.
    refusing.write("/root/.ssh/authorized_keys", "")
    yaml_file.write_text(_yaml(lab, [*three, refusing]))
    walk.mistake("refuses-key", "foundation up", status=7, says=re.escape(refusing.ip) + ".*authentication failed")
    # A host whose key is not in known_hosts yet.
    known = walk.term.cwd / "known_hosts"
    known.write_text(
        "".join(line for line in Path(lab.known_hosts).read_text().splitlines(True) if other.ip not in line)
    )
    yaml_file.write_text(_yaml(lab, [*three, other], known_hosts=str(known)))
    walk.mistake("unknown-host-key", "foundation up", status=7, says=re.escape(other.ip) + ".*unknown host key")
    # A host that is down (its link is gone: nobody answers).
    other.partition()
    try:
        yaml_file.write_text(_yaml(lab, [*three, other]))
        walk.mistake("host-down", "foundation up", status=7, says=re.escape(other.ip))
    finally:
        other.heal()
    yaml_file.write_text(_yaml(lab, three))


def test_ctrl_c_in_the_middle_of_up_then_up_again(walk: Walk):
    lab = walk.lab
    cwd = walk.term.cwd
    (cwd / "foundation.yaml").write_text(_yaml(lab, [*lab.hosts[:3], lab.hosts[4]]))
    term = walk.term
    term.clear()
    started = term.type("foundation up")
    term.wait_for(re.escape(lab.hosts[4].ip), 30)  # up is working on the new host
    time.sleep(0.5)
    term.interrupt()
    screen = term.finish("foundation up", started, 60)
    walk.keep("ctrl-c", screen)
    assert screen.exit_status == 130, screen.text
    assert "Traceback" not in screen.text, screen.text
    assert any(line.startswith("hint: ") for line in screen.answer), screen.text
    again = walk.run("up-again", "foundation up", timeout=240)
    assert again.exit_status == 0, again.text
    # Exactly one consul and one agent on the host that was interrupted.
    args = []
    for pid in lab.hosts[4].pids():
        try:
            args.append(Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
        except OSError:
            continue
    consuls = [a for a in args if a and a[0].endswith(b"consul") and b"agent" in a]
    agents = [a for a in args if b"foundation_cli.agent" in a or (b"foundation_cli" in a and b"agent" in a)]
    assert len(consuls) == 1 and len(agents) == 1, args


def test_down_then_the_cluster_is_gone(walk: Walk):
    down = walk.run("down", "foundation down", timeout=180)
    assert down.exit_status == 0, down.text
    walk.mistake("after-down", "foundation ps", status=3, says="cannot reach Consul")
