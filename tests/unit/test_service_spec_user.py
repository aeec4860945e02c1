"""ServiceSpec.user (--user): validated, stored only when set (old specs keep their bytes and digest)."""

from __future__ import annotations

import pytest

from foundation_cli.agent.supervisor import run_as
from foundation_cli.core.service_spec import ServiceSpec
from foundation_cli.errors import UsageError


def _spec(**kw) -> ServiceSpec:
    return ServiceSpec(name="web", mode="replicated", command=["sleep", "1"], **kw)


def test_unset_user_leaves_the_stored_bytes_alone():
    assert "user" not in _spec().to_dict()
    assert ServiceSpec.from_json(_spec().to_json()).user is None


def test_user_round_trips_and_changes_the_digest():
    spec = _spec(user="www-data").validate()
    assert ServiceSpec.from_json(spec.to_json()).user == "www-data"
    assert spec.digest() != _spec().digest()


@pytest.mark.parametrize("bad", ["", "x;y", "root\n", "-u", "a b", "UPPER"])
def test_bad_user_names_are_refused(bad):
    with pytest.raises(UsageError, match="--user"):
        _spec(user=bad).validate()


def test_run_as_unknown_user_is_an_oserror_and_none_is_the_agent_itself():
    env: dict[str, str] = {}
    assert run_as(None, env) == {} and env == {}
    with pytest.raises(OSError, match="no such user"):
        run_as("no-such-user-xyz", env)
