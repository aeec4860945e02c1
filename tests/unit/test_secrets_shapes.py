"""The masker finds secrets that were never registered, by their shape (hostile inputs of issue 12)."""

from __future__ import annotations

import json
import re
import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation_cli.raw.secrets import MASK, mask, spans

TOKEN = "7e1c0f3a-9b2d-4c5e-8f60-1a2b3c4d5e6f"
GOSSIP = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s="
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW\n"
    "QyNTUxOQAAACBGVzq7yRk0LSECRET0KEYMATERIALsecret0ksecret0ksecret0k0AAAA\n"
    "-----END OPENSSH PRIVATE KEY-----\n"
)

TEMPLATES = [
    # acl.tokens.* never registered: HCL, JSON, YAML, dotted.
    'acl {{\n  enabled = true\n  tokens {{\n    agent = "{s}"\n    default = "{s}"\n  }}\n}}\n',
    '{{"acl": {{"enabled": true, "tokens": {{"agent": "{s}", "master": "{s}"}}}}}}',
    "consul:\n  acl:\n    tokens:\n      agent: {s}\n      replication: '{s}'\n  servers: 3\n",
    "consul.acl.tokens.agent = {s}",
    # -token VALUE, -token=VALUE, --token "VALUE".
    "consul acl set-agent-token -token {s} agent x",
    "consul kv get -token={s} a",
    'foundation status --token "{s}"',
    # ?token= with a percent-encoded name.
    "GET http://127.0.0.1:8500/v1/kv/a?%74oken={s}&dc=dc1",
    "GET http://127.0.0.1:8500/v1/kv/a?dc=dc1&TOK%45N={s}",
    # user:pass@ in a URL.
    "CONSUL_HTTP_ADDR=https://operator:{s}@10.0.0.1:8501",
    # a bare gossip key.
    "consul keyring -install {s}",
    "consul keyring -use={s}",
    "consul agent -encrypt {s} -dev",
    'encrypt = "{s}"',
]


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize("secret", [TOKEN, GOSSIP, "hunter2-P4ss"])
def test_unregistered_secret_shapes_are_masked(template, secret):
    out = mask(template.format(s=secret))
    assert secret not in out
    assert MASK in out


def test_pem_private_keys_are_masked_whole_and_when_cut_off():
    for text in (f"before\n{PEM}after", f"before\n{PEM[:120]}"):
        out = mask(text)
        assert "SECRET0KEY" not in out and "b3BlbnNzaC1rZXk" not in out
        assert out.startswith("before\n-----BEGIN OPENSSH PRIVATE KEY-----")
    # A public key or a certificate is not a secret.
    cert = "-----BEGIN CERTIFICATE-----\nMIIBxTCCAWugAwIBAgIQ\n-----END CERTIFICATE-----\n"
    assert mask(cert) == cert


@pytest.mark.parametrize(
    "text",
    [
        "hint: pass --token or set CONSUL_HTTP_TOKEN",
        '-H "X-Consul-Token: $CONSUL_HTTP_TOKEN"',
        "curl http://127.0.0.1:8500/v1/kv/foundation/kv/a?recurse=true",
        "https://example.org/docs/acl",
        "token: --token",
    ],
)
def test_harmless_text_is_left_alone(text):
    assert mask(text) == text


# Not a word with a trailing stop ("--token aaaaa."): after a flag the masker reads that as prose
# ("--token or set CONSUL_HTTP_TOKEN"), as it must; no token Consul makes looks like it.
_value = st.text(alphabet=string.ascii_letters + string.digits + "+/=-_.", min_size=6, max_size=60).filter(
    lambda v: not v.startswith(("-", "$")) and not v.isalpha() and not re.fullmatch(r"[a-z]+[.,:;]?", v)
)


@settings(max_examples=150, deadline=None)
@given(secret=_value, template=st.sampled_from(TEMPLATES))
def test_any_token_shaped_value_is_masked(secret, template):
    assert secret not in mask(template.format(s=secret))


@settings(max_examples=150, deadline=None)
@given(agent=_value, master=_value)
def test_config_dump_never_shows_acl_tokens(agent, master):
    dumped = json.dumps({"consul": {"acl": {"enabled": True, "tokens": {"agent": agent, "master": master}}}}, indent=2)
    out = mask(dumped)
    assert agent not in out and master not in out
    assert json.loads(out)["consul"]["acl"]["enabled"] is True


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_spans_are_sorted_disjoint_and_inside_the_text(text):
    found = spans(text)
    last = -1
    for start, end in found:
        assert last <= start < end <= len(text)
        last = end


@pytest.mark.parametrize(
    "args", [["config", "show", "--effective"], ["config", "show", "--json"], ["config", "show", "--file"]]
)
def test_config_show_never_prints_acl_tokens_from_the_yaml(args, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from foundation_cli.commands.app import app

    (tmp_path / "foundation.yaml").write_text(
        "hosts: [a]\nconsul:\n  acl:\n    enabled: true\n    tokens:\n"
        f'      agent: "{TOKEN}"\n      master: hostile value with spaces\n      default: x1\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    res = CliRunner().invoke(app, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    for secret in (TOKEN, "hostile value", "x1"):
        assert secret not in res.output
    assert "enabled: true" in res.output or '"enabled": true' in res.output


# Each shape alone, with no other trigger word of the masker's quick precheck around it.
BARE_SHAPES = [
    *(f'{key}: "{{s}}"' for key in ("encrypt", "token", "passwd", "secret", "agent_master", "authorization")),
    *(f"{key} = {{s}}" for key in ("password", "initial_management", "x-consul-token")),
    *(f"keyring {flag} {{s}}" for flag in ("-install", "-use", "-remove", "--password", "-secret")),
    "a?%74oken={s}&b",
    "?tO%4BeN={s}",
    "-----BEGIN RSA PRIVATE KEY-----\n{s}\n-----END RSA PRIVATE KEY-----",
    "x {s}",
]
# Characters re's IGNORECASE takes as the same letter (the long s, the Kelvin sign, the dotted I).
_FOLDS = {"s": "sSſ", "k": "kK\u212a", "i": "iIİı", "t": "tT", "o": "oO", "e": "eE", "n": "nN", "a": "aA"}


def _spans_without_precheck(text: str) -> list[tuple[int, int]]:
    from foundation_cli.raw import secrets

    trigger = secrets._TRIGGER
    try:
        secrets._TRIGGER = secrets._Pattern(r"")  # matches everything: every shape is searched
        return spans(text)
    finally:
        secrets._TRIGGER = trigger


@pytest.mark.parametrize("template", [*TEMPLATES, *BARE_SHAPES])
def test_the_quick_precheck_lets_every_shape_through(template):
    """spans() skips the shapes for text without a trigger word: every shape has one."""
    text = template.format(s=TOKEN)
    assert spans(text) == _spans_without_precheck(text)
    assert spans(text) or template == "x {s}"


@st.composite
def _shaped_text(draw):
    """A secret-shaped text in odd letter cases, after a little noise."""
    text = draw(st.sampled_from([*TEMPLATES, *BARE_SHAPES])).format(s=draw(_value))
    chars = [draw(st.sampled_from(_FOLDS.get(c.lower(), c))) if draw(st.booleans()) else c for c in text]
    return draw(st.text(max_size=5)) + "".join(chars)


@settings(max_examples=300, deadline=None)
@given(_shaped_text() | st.text(max_size=60))
def test_the_quick_precheck_never_hides_a_shape(text):
    """The precheck folds case as the shapes do (re's IGNORECASE): it finds exactly what they would."""
    assert spans(text) == _spans_without_precheck(text)
