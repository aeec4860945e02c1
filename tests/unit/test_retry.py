"""core/retry.backoff: the one retry schedule of the agent and of `listen`."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from foundation_cli.core.retry import backoff


def test_the_schedule_doubles_from_the_base_up_to_the_cap():
    assert [backoff(a) for a in range(7)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert [backoff(a, base=1.0, cap=30.0) for a in range(7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff(3, cap=1.0) == 1.0


@given(st.integers(min_value=0, max_value=10**9))
def test_any_attempt_count_waits_at_most_the_cap_and_never_overflows(attempt):
    assert 0.25 <= backoff(attempt) <= 5.0
    assert backoff(attempt + 1) >= backoff(attempt)
