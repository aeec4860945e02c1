"""Hostile input over SSH (real sshd in a lab host, real sudo with a password).

- sudo-password mode: the password is sent only when sudo shows its prompt, so with cached
  credentials it never becomes the first line of an uploaded file (or a command's stdin);
- uploads are private from the first byte and end with the mode asked for.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from foundation_cli.errors import PermissionDeniedError
from foundation_cli.tools import ssh

pytestmark = [pytest.mark.lab, pytest.mark.timeout(120)]

PASSWORD = "pw-H4-sentinel-9f1c"


@pytest.fixture(scope="module")
def sudo_host():
    """One lab host with user alice: key login, sudo with a password, credentials cached globally."""
    if shutil.which("sudo") is None:
        pytest.skip("sudo is not installed (scripts/install-test-deps.sh installs it)")
    from tests.conftest import _need_root
    from tests.lab.netns import Lab

    _need_root()
    lab = Lab(1)
    try:
        host = lab.hosts[0]
        host.exec("useradd -m -s /bin/sh alice")
        host.exec("chpasswd", input=f"alice:{PASSWORD}\n")
        # timestamp_type=global: one successful sudo caches the credentials for every later session,
        # which is when a password sent ahead of stdin used to reach the command.
        host.write("/etc/sudoers.d/alice", "Defaults:alice timestamp_type=global\nalice ALL=(ALL) ALL\n", 0o440)
        pub = Path(lab.ssh_key + ".pub").read_text(encoding="utf-8")
        host.exec("mkdir -p /home/alice/.ssh && chown alice /home/alice/.ssh")
        host.write("/home/alice/.ssh/authorized_keys", pub, 0o644)
        yield lab, host
    finally:
        lab.close()


def _connect(lab, host, password: str) -> ssh.Connection:
    opts = ssh.SSHOptions(
        user="alice", identity_file=lab.ssh_key, known_hosts=lab.known_hosts, prompt=lambda _text: password
    )
    ssh._passphrases.pop("sudo:alice", None)
    return ssh.connect(host.ip, opts)


def test_sudo_password_never_reaches_stdin_with_cached_credentials(sudo_host):
    lab, host = sudo_host
    for attempt in range(2):  # the first upload follows the probe (cached); a new connection caches again
        with _connect(lab, host, PASSWORD) as conn:
            conn.upload("/etc/foundation-h4/upload.txt", b"line one\nline two\n", mode=0o600)
            res = conn.run("cat /etc/foundation-h4/upload.txt; stat -c '%a %U' /etc/foundation-h4/upload.txt")
            piped = conn.run("cat", stdin=b"only this\n")
        content = host.path("/etc/foundation-h4/upload.txt").read_bytes()
        assert content == b"line one\nline two\n", attempt
        assert PASSWORD not in res.stdout + res.stderr
        assert res.stdout.splitlines()[-1] == "600 root"
        assert piped.stdout == "only this\n"
        assert "foundation-started" not in piped.stderr and "foundation-sudo" not in piped.stderr


def test_sudo_password_is_sent_when_sudo_asks(sudo_host):
    lab, host = sudo_host
    host.exec("rm -rf /var/run/sudo/ts /run/sudo/ts")  # forget cached credentials: sudo must ask
    with _connect(lab, host, PASSWORD) as conn:
        host.exec("rm -rf /var/run/sudo/ts /run/sudo/ts")
        res = conn.run("id -u", check=True)
        host.exec("rm -rf /var/run/sudo/ts /run/sudo/ts")  # asked again: the password, then the file's bytes
        conn.upload("/etc/foundation-h4/asked.txt", b"exact\ncontent", mode=0o600)
    assert res.stdout.strip() == "0"
    assert host.path("/etc/foundation-h4/asked.txt").read_bytes() == b"exact\ncontent"


def test_wrong_sudo_password_is_a_clear_refusal(sudo_host):
    lab, host = sudo_host
    host.exec("rm -rf /var/run/sudo/ts /run/sudo/ts")
    with pytest.raises(PermissionDeniedError, match="sudo password refused"), _connect(lab, host, "x") as conn:
        conn.run("true")


def test_an_upload_is_private_from_its_first_byte(tmp_path):
    """The remote upload command, run by sh with its stdin held open: the half-written file is 0600."""
    import os
    import stat
    import subprocess
    import time

    from foundation_cli.raw.render import upload_command

    target = tmp_path / "etc" / "secret.token"
    tmp = Path(str(target) + ".foundation-tmp")
    tmp.parent.mkdir()
    tmp.write_text("leftover, world-readable")
    tmp.chmod(0o644)
    proc = subprocess.Popen(["sh", "-c", upload_command(str(target), 0o640)], stdin=subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write(b"s3cret-first-bytes")
        proc.stdin.flush()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if tmp.read_bytes().startswith(b"s3cret"):
                    break
            except OSError:
                pass
            time.sleep(0.02)
        assert stat.S_IMODE(os.stat(tmp).st_mode) == 0o600  # while cat still writes
        proc.stdin.close()
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert target.read_bytes() == b"s3cret-first-bytes"
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o640 and not tmp.exists()


def test_a_hosts_hostile_existing_config_is_not_trusted(tmp_path):
    """Over real SSH: a host whose Consul config holds a node_name with a newline and its own gossip key."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import _need_root
    from tests.lab.netns import Lab

    _need_root()
    key = "aG9zdGlsZS1rZXktaG9zdGlsZS1rZXktaG9zdGlsZSE="
    with Lab(1) as lab:
        host = lab.hosts[0]
        old_tokens = ("OLD-consul-agent-token-h4", "OLD-foundation-agent-token-h4")
        evil = {
            "node_name": "n1\nExecStartPre=/bin/touch /tmp/pwned",
            "encrypt": key,
            "server": True,
            "acl": {"enabled": True, "tokens": {"agent": old_tokens[0]}},
        }
        host.write("/etc/foundation/consul.d/foundation.json", json.dumps(evil, indent=2), 0o640)
        host.write("/etc/foundation/agent.token", old_tokens[1] + "\n", 0o600)
        yaml = (
            f"hosts: [{host.ip}]\nssh:\n  user: root\n  identity_file: {lab.ssh_key}\n"
            f"  known_hosts: {lab.known_hosts}\n  connect_timeout: 5\n"
        )
        (tmp_path / "foundation.yaml").write_text(yaml)
        env = dict(os.environ, FOUNDATION_STATE_DIR=str(tmp_path / "state"), NO_COLOR="1")

        def up(*args: str) -> subprocess.CompletedProcess:
            argv = [sys.executable, "-m", "foundation_cli", "up", "--dry-run", *args]
            return subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=200)

        refused = up()
        assert refused.returncode != 0
        assert "refusing to make it the whole cluster's key" in refused.stderr, refused.stderr
        assert key not in refused.stdout + refused.stderr
        # Adopted explicitly: the plan goes on, with a generated node name and a warning, never the injected one.
        (tmp_path / "foundation.yaml").write_text(yaml + f"consul:\n  encrypt: {key}\n")
        plan = up("--explain", "-vv")
        assert plan.returncode == 0, plan.stderr
        assert "not a DNS label" in plan.stderr
        # The host's old tokens (its Consul config, its agent token file) appear nowhere: probe, diff, script.
        assert not any(t in plan.stdout + plan.stderr for t in old_tokens)
        assert "ExecStartPre" not in plan.stdout and key not in plan.stdout + plan.stderr
        assert "${FOUNDATION_SECRET_" in plan.stdout  # the key is a variable the script asks for
