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
    assert res.stdout.strip() == "0"


def test_wrong_sudo_password_is_a_clear_refusal(sudo_host):
    lab, host = sudo_host
    host.exec("rm -rf /var/run/sudo/ts /run/sudo/ts")
    with pytest.raises(PermissionDeniedError, match="sudo password refused"), _connect(lab, host, "x") as conn:
        conn.run("true")
