"""backoff.py: full jitter, cap, Retry-After as a floor."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrapy_gateway.core.backoff import Backoff

BACKOFF = Backoff(base=1.0, cap=30.0)


@pytest.mark.parametrize(("retry", "ceiling"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 16.0), (6, 30.0)])
def test_full_jitter_bounds_per_retry(retry, ceiling):
    delays = [BACKOFF.delay(retry, random.Random(seed)) for seed in range(300)]
    assert all(0.0 <= d <= ceiling for d in delays)
    # Full jitter really spans the range: close to both ends.
    assert min(delays) < 0.05 * ceiling
    assert max(delays) > 0.95 * ceiling


@pytest.mark.parametrize("retry", [1, 3, 5, 9])
def test_delay_is_uniform_draw_with_the_given_rng(retry):
    expected = random.Random(42).uniform(0.0, min(30.0, 2.0 ** (retry - 1)))
    assert BACKOFF.delay(retry, random.Random(42)) == expected


@pytest.mark.parametrize("retry", [7, 20, 63, 64, 1000, 10**9])
def test_cap_holds_for_any_retry_number(retry):
    delays = [BACKOFF.delay(retry, random.Random(seed)) for seed in range(100)]
    assert all(0.0 <= d <= 30.0 for d in delays)
    assert max(delays) > 25.0


def test_retry_after_is_a_floor_with_ten_percent_spread():
    delays = [BACKOFF.delay(1, random.Random(seed), retry_after=50.0) for seed in range(300)]
    assert all(50.0 <= d <= 55.0 for d in delays)
    assert max(delays) - min(delays) > 4.0  # spread, not all on the same instant


def test_retry_after_shorter_than_backoff_keeps_the_backoff():
    # With retry 6 the jitter ceiling is 30; a 0.5 s Retry-After only sets the floor.
    delays = [BACKOFF.delay(6, random.Random(seed), retry_after=0.5) for seed in range(300)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert max(delays) > 20.0


def test_retry_after_zero_and_no_jitter():
    assert Backoff(1.0, 30.0, retry_after_jitter=0.0).delay(1, random.Random(1), retry_after=45.0) == 45.0
    assert 0.0 <= BACKOFF.delay(1, random.Random(1), retry_after=0.0) <= 1.0


@settings(max_examples=300, deadline=None)
@given(
    retry=st.integers(0, 200),
    base=st.floats(0.001, 100.0),
    cap=st.floats(0.001, 1000.0),
    retry_after=st.one_of(st.none(), st.floats(0.0, 1e6)),
    seed=st.integers(0, 2**32),
)
def test_delay_bounds_property(retry, base, cap, retry_after, seed):
    delay = Backoff(base, cap).delay(retry, random.Random(seed), retry_after)
    upper = max(cap, (retry_after or 0.0) * 1.1)
    assert 0.0 <= delay <= upper * (1 + 1e-12)
    if retry_after is not None:
        assert delay >= retry_after
    else:
        assert delay <= min(cap, base * 2.0 ** max(retry - 1, 0)) * (1 + 1e-12)
