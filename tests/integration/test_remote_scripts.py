"""A remote script shown as a heredoc block (`up --explain`, `--dry-run`) runs as shown (real sshd, lab host).

The host probe of `foundation up` is a multi-line `sh -c` script. Its rendered block — pasted into
bash with only the lab's key and known_hosts added to `ssh` — must print what the probe printed
when Foundation ran it over paramiko.
"""

from __future__ import annotations

import shlex
import subprocess

import pytest

from foundation_cli.core import bootstrap
from foundation_cli.raw import render
from foundation_cli.raw.recorder import Recorder, use_recorder
from foundation_cli.tools import ssh

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def lab_host():
    from tests.conftest import _need_root
    from tests.lab.netns import Lab

    _need_root()
    lab = Lab(1)
    try:
        yield lab, lab.hosts[0]
    finally:
        lab.close()


def _paste(block: list[str], lab) -> subprocess.CompletedProcess:
    """Run the block with bash, ssh given the lab's key and pinned host keys (what ~/.ssh/config would say)."""
    wrapper = (
        f"ssh() {{ command ssh -i {shlex.quote(lab.ssh_key)} -o UserKnownHostsFile={shlex.quote(lab.known_hosts)} "
        '-o StrictHostKeyChecking=yes -o BatchMode=yes "$@"; }\n'
    )
    return subprocess.run(["bash", "-c", wrapper + "\n".join(block)], capture_output=True, text=True, timeout=60)


def test_probe_block_runs_as_shown(lab_host) -> None:
    lab, host = lab_host
    opts = ssh.SSHOptions(user="root", identity_file=lab.ssh_key, known_hosts=lab.known_hosts)
    recorder = Recorder()
    with use_recorder(recorder), ssh.connect(host.ip, opts) as conn:
        bootstrap.probe(conn, install_root="/opt/foundation", python="python3")
        (op,) = [o for o in recorder.operations if o.kind == "ssh-exec" and "os-release" in (o.command or "")]
        ran = conn.run(op.command, write=False)
    block = render.ssh_block(op)
    assert block is not None, op.command
    assert len(block) > 10 and "'\"'\"'" not in "\n".join(block)  # readable: no nested quote escaping
    explained = render.explain_block(op).splitlines()  # the same block (its own random marker), then ↳
    assert explained[0].startswith("$ ssh root@") and explained[1 : len(block) - 1] == block[1:-1]
    assert explained[len(block) - 1] in explained[0] and explained[len(block)].startswith("  ↳ ")
    pasted = _paste(block, lab)
    assert pasted.returncode == ran.status, pasted.stderr
    assert pasted.stdout == ran.stdout
    assert f"hostname={host.name}" in pasted.stdout


def test_dry_run_script_write_block_runs_as_shown(lab_host, tmp_path) -> None:
    """A multi-line write in a dry-run script: the script, run, does what the command would have done."""
    lab, host = lab_host
    remote = "/tmp/foundation-h2-block"
    script = f"mkdir -p {remote}\nprintf '%s\\n' \"it's $((1 + 1))\" > {remote}/out\necho done"
    from foundation_cli.raw.operation import RawOperation

    op = RawOperation(kind="ssh-exec", host=host.ip, user="root", command=f"sh -c {shlex.quote(script)}")
    text = render.script([op], title="t")
    body = text.split("set -euo pipefail\n", 1)[1]
    assert "<<" in body and "mkdir -p" in body.splitlines()[1]
    pasted = _paste([text], lab)
    assert pasted.returncode == 0, pasted.stderr
    assert pasted.stdout.strip() == "done"
    assert host.exec(f"cat {remote}/out").stdout == "it's 2\n"


@pytest.mark.parametrize(
    "args",
    [
        ["hostname"],
        ["ls", "-la", "/etc/hostname"],
        ["sh", "-c", "'echo \"$0|$1\"; exit 3'", "-x", "--help"],
        ["echo", "-c", "x", "--explain", "-v"],  # Foundation's own option names, passed on untouched
    ],
)
def test_foundation_ssh_equals_ssh(lab_host, tmp_path, args) -> None:
    """`foundation ssh NODE ARGS…` against a real sshd: the same output and exit status as ssh itself."""
    import json
    import os
    import sys

    lab, host = lab_host
    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_text(
        json.dumps(
            {
                "mode": "ssh",
                "nodes": {host.ip: "n1"},
                "hosts": [host.ip],
                "ssh": {"user": "root", "identity_file": lab.ssh_key, "known_hosts": lab.known_hosts},
            }
        )
    )
    env = {**os.environ, "FOUNDATION_STATE_DIR": str(state)}
    via = subprocess.run(
        [sys.executable, "-m", "foundation_cli", "ssh", "n1", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    direct = subprocess.run(
        ["ssh", "-i", lab.ssh_key, "-o", f"UserKnownHostsFile={lab.known_hosts}", f"root@{host.ip}", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert (via.returncode, via.stdout) == (direct.returncode, direct.stdout), (via.stderr, direct.stderr)
