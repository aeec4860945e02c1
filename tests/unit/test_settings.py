"""Global settings: Consul address normalisation and flag/env precedence, as the consul CLI does it."""

from __future__ import annotations

import pytest

from foundation_cli.errors import UsageError
from foundation_cli.settings import DEFAULT_CONSUL_ADDR, normalize_addr, resolve


@pytest.fixture(autouse=True)
def _no_state(tmp_path, monkeypatch):
    # No `foundation up` state file fills in anything here.
    monkeypatch.setenv("FOUNDATION_STATE_DIR", str(tmp_path / "state"))


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("127.0.0.1:8500", "http://127.0.0.1:8500"),
        ("localhost", "http://localhost:8500"),
        ("http://10.0.0.1", "http://10.0.0.1:8500"),
        ("https://10.0.0.1", "https://10.0.0.1:8501"),
        ("https://consul.example:443", "https://consul.example:443"),
        ("  http://h:1234/  ", "http://h:1234"),
        ("[::1]:8500", "http://[::1]:8500"),
    ],
)
def test_normalize_addr(given, expected):
    assert normalize_addr(given) == expected


def test_normalize_addr_with_consul_http_ssl():
    assert normalize_addr("h:8501", ssl=True) == "https://h:8501"


@pytest.mark.parametrize("bad", ["unix:///tmp/consul.sock", "ftp://h:1", "http://", "h:notaport"])
def test_bad_addresses_are_usage_errors(bad):
    with pytest.raises(UsageError):
        normalize_addr(bad)


def test_defaults_without_env():
    s = resolve(env={})
    assert s.consul_addr == DEFAULT_CONSUL_ADDR
    assert s.token is None
    assert s.ssl_verify is True and s.color is True


def test_env_is_read_like_the_consul_cli():
    env = {
        "CONSUL_HTTP_ADDR": "10.1.2.3:8500",
        "CONSUL_HTTP_TOKEN": "env-token-1234",
        "CONSUL_CACERT": "/ca.pem",
        "CONSUL_CLIENT_CERT": "/c.pem",
        "CONSUL_CLIENT_KEY": "/k.pem",
        "CONSUL_HTTP_SSL_VERIFY": "false",
    }
    s = resolve(env=env)
    assert s.consul_addr == "http://10.1.2.3:8500"
    assert s.token == "env-token-1234"
    assert (s.cacert, s.client_cert, s.client_key) == ("/ca.pem", "/c.pem", "/k.pem")
    assert s.ssl_verify is False


def test_ssl_env_switches_scheme():
    assert resolve(env={"CONSUL_HTTP_ADDR": "h:8501", "CONSUL_HTTP_SSL": "true"}).consul_addr == "https://h:8501"


def test_flags_win_over_env():
    s = resolve(
        consul_addr="flag-host:1", token="flag-token-1234", env={"CONSUL_HTTP_ADDR": "env:2", "CONSUL_HTTP_TOKEN": "e"}
    )
    assert s.consul_addr == "http://flag-host:1"
    assert s.token == "flag-token-1234"


def test_token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text("file-token-1234\n")
    assert resolve(env={"CONSUL_HTTP_TOKEN_FILE": str(path)}).token == "file-token-1234"
    # CONSUL_HTTP_TOKEN wins over the file, as in the consul CLI.
    assert resolve(env={"CONSUL_HTTP_TOKEN_FILE": str(path), "CONSUL_HTTP_TOKEN": "env-token-1234"}).token == (
        "env-token-1234"
    )


def test_unreadable_token_file_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        resolve(env={"CONSUL_HTTP_TOKEN_FILE": str(tmp_path / "missing")})


def test_cluster_state_fills_in_what_flags_and_env_do_not(tmp_path, monkeypatch):
    from foundation_cli.core import cluster_state

    cluster_state.save({"consul_http_addr": "http://198.18.0.2:8500", "token": "state-token-1234"})
    s = resolve(env={})
    assert s.consul_addr == "http://198.18.0.2:8500" and s.token == "state-token-1234"
    # The state's token (and CA) go to that cluster's own servers only, never to another address.
    s = resolve(env={"CONSUL_HTTP_ADDR": "127.0.0.1:9"})
    assert s.consul_addr == "http://127.0.0.1:9" and s.token is None
    s = resolve(env={"CONSUL_HTTP_ADDR": "198.18.0.2:8500"})
    assert s.token == "state-token-1234"
    assert resolve(env={"CONSUL_HTTP_ADDR": "127.0.0.1:9", "CONSUL_HTTP_TOKEN": "mine-5678"}).token == "mine-5678"


def test_no_color_and_verbosity():
    assert resolve(env={"NO_COLOR": ""}).color is False
    assert resolve(no_color=True, env={}).color is False
    assert resolve(quiet=True, env={}).quiet is True
    assert resolve(verbose=2, env={}).verbosity == 2


def test_token_is_registered_as_a_secret():
    from foundation_cli.raw.secrets import mask

    resolve(token="registered-by-resolve-42", env={})
    assert "registered-by-resolve-42" not in mask("x registered-by-resolve-42")
