"""SSH adapter pieces that need no server: ~/.ssh/config resolution and key files."""

from __future__ import annotations

import subprocess

import pytest

from foundation_cli.errors import PermissionDeniedError, UsageError
from foundation_cli.tools import ssh


def test_ssh_config_is_honoured_and_yaml_overrides_win(tmp_path):
    conf = tmp_path / "config"
    conf.write_text(
        "Host pi\n  HostName 10.0.0.7\n  User pi\n  Port 2222\n  IdentityFile ~/.ssh/pi_key\n"
        "  ProxyJump bastion\n  UserKnownHostsFile ~/.ssh/lab_known\n"
    )
    opts = ssh.SSHOptions(user="root", config_file=str(conf), identity_file="/keys/default")
    t = ssh.resolve_target("pi", opts)
    assert (t.hostname, t.user, t.port, t.proxy_jump) == ("10.0.0.7", "pi", 2222, "bastion")
    assert t.identity_files[0].endswith("/.ssh/pi_key") and t.identity_files[-1] == "/keys/default"
    assert t.known_hosts.endswith("/.ssh/lab_known")
    t = ssh.resolve_target("pi", opts, user="admin", port=22)
    assert (t.user, t.port) == ("admin", 22)
    other = ssh.resolve_target("10.0.0.9", opts)
    assert (other.hostname, other.user, other.port) == ("10.0.0.9", "root", 22)


def _keygen(path, passphrase: str) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-f", str(path)], check=True)


def test_key_passphrase_is_asked_once(tmp_path):
    key = tmp_path / "id"
    _keygen(key, "s3cret-pass")
    asked = []

    def prompt(text: str) -> str:
        asked.append(text)
        return "s3cret-pass"

    assert ssh.load_key(str(key), prompt) is not None
    assert ssh.load_key(str(key), prompt) is not None
    assert len(asked) == 1
    from foundation_cli.raw.secrets import mask

    assert "s3cret-pass" not in mask("the passphrase is s3cret-pass")


def test_wrong_passphrase_and_bad_key_files_are_one_line_errors(tmp_path):
    key = tmp_path / "id2"
    _keygen(key, "right-one")
    with pytest.raises(PermissionDeniedError, match="wrong passphrase"):
        ssh.load_key(str(key), lambda _t: "wrong-one")
    with pytest.raises(PermissionDeniedError, match="needs a passphrase"):
        ssh.load_key(str(key), None)
    junk = tmp_path / "junk"
    junk.write_text("not a key\n")
    with pytest.raises(UsageError, match=r"junk: bad key file: not a private key"):
        ssh.load_key(str(junk), None)
    with pytest.raises(UsageError, match="key file not found"):
        ssh.load_key(str(tmp_path / "missing"), None)
