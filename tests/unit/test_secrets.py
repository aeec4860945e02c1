"""Secret masking: tokens, gossip keys and passwords never reach output or logs."""

from __future__ import annotations

import logging

import pytest

from foundation_cli.raw import secrets
from foundation_cli.raw.secrets import MASK, mask


def test_registered_secret_is_masked_anywhere():
    secrets.register("0b1d2c3e-unit-test-token")
    assert mask("x 0b1d2c3e-unit-test-token y") == f"x {MASK} y"
    assert mask("prefix0b1d2c3e-unit-test-tokensuffix") == f"prefix{MASK}suffix"


def test_short_values_are_not_registered():
    secrets.register("abc")
    assert mask("abc") == "abc"
    secrets.register(None)
    secrets.register("")


@pytest.mark.parametrize(
    "text",
    [
        "X-Consul-Token: s3cret-value",
        "Authorization: Bearer s3cret-value",
        "http://h/v1/kv/a?token=s3cret-value&dc=dc1",
        'encrypt = "s3cret-value"',
        '{"encrypt": "s3cret-value"}',
        "password=s3cret-value",
        "CONSUL_HTTP_TOKEN=s3cret-value",
        "agent_master: s3cret-value",
    ],
)
def test_secret_shaped_fields_are_masked(text):
    out = mask(text)
    assert "s3cret-value" not in out
    assert MASK in out


@pytest.mark.parametrize(
    "text",
    [
        '-H "X-Consul-Token: $CONSUL_HTTP_TOKEN"',
        "hint: check the ACL token: --token or CONSUL_HTTP_TOKEN",
        "curl http://127.0.0.1:8500/v1/kv/foundation/kv/a",
        "",
    ],
)
def test_harmless_text_is_unchanged(text):
    assert mask(text) == text


def test_query_token_keeps_other_parameters():
    assert mask("/v1/kv/a?token=zzz999&dc=dc1") == f"/v1/kv/a?token={MASK}&dc=dc1"


def test_logging_filter_masks_messages_and_args(caplog):
    secrets.register("log-secret-123456")
    logger = logging.getLogger("foundation.test.secrets")
    logger.addFilter(secrets.MaskingFilter())
    with caplog.at_level(logging.INFO, logger="foundation.test.secrets"):
        logger.info("token is %s", "log-secret-123456")
    assert "log-secret-123456" not in caplog.text
    assert MASK in caplog.text


def test_mask_keeps_json_parseable_when_a_string_holds_a_secret_field():
    import json

    from foundation_cli.raw.secrets import mask

    text = json.dumps({"reasoning": 'set encrypt = "c2VjcmV0a2V5MTIz" in the config', "t": "token: abc123"})
    masked = json.loads(mask(text))
    assert "c2VjcmV0a2V5MTIz" not in masked["reasoning"]
    assert masked["reasoning"] == 'set encrypt = "****" in the config'
    assert masked["t"] == "token: ****"
