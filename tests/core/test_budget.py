"""budget.py: per-domain retry token bucket that paces instead of dropping."""

from __future__ import annotations

import math

import pytest

from scrapy_gateway.core.budget import RetryBudget

D = "shop.example"


def test_burst_is_free_then_debt_is_paced_at_the_floor_rate():
    budget = RetryBudget(ratio=0.0, min_per_second=2.0, burst=3.0)
    waits = [budget.withdraw(D, 0.0) for _ in range(6)]
    assert waits == [0.0, 0.0, 0.0, 0.5, 1.0, 1.5]


def test_first_attempts_deposit_ratio_tokens():
    budget = RetryBudget(ratio=0.5, min_per_second=1.0, burst=2.0)
    assert [budget.withdraw(D, 0.0) for _ in range(2)] == [0.0, 0.0]
    budget.deposit(D, 0.0)
    budget.deposit(D, 0.0)  # +1 token from two first attempts
    assert budget.withdraw(D, 0.0) == 0.0
    assert budget.withdraw(D, 0.0) == 1.0


def test_deposits_never_exceed_the_burst():
    budget = RetryBudget(ratio=0.5, min_per_second=1.0, burst=2.0)
    for _ in range(100):
        budget.deposit(D, 0.0)
    assert [budget.withdraw(D, 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]


def test_deposits_pay_back_debt():
    budget = RetryBudget(ratio=0.5, min_per_second=1.0, burst=1.0)
    budget.withdraw(D, 0.0)
    assert budget.withdraw(D, 0.0) == 1.0  # tokens -1
    for _ in range(4):
        budget.deposit(D, 0.0)  # -1 + 2 = 1 (capped at burst)
    assert budget.withdraw(D, 0.0) == 0.0


def test_refill_over_time_at_min_per_second():
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, burst=3.0)
    for _ in range(5):
        budget.withdraw(D, 0.0)  # tokens -2
    assert budget.withdraw(D, 1.0) == 2.0  # -2 + 1 - 1
    assert budget.withdraw(D, 2.5) == pytest.approx(1.5)  # -2 + 1.5 - 1
    # A long quiet spell refills to the burst, not beyond.
    assert [budget.withdraw(D, 1000.0) for _ in range(4)] == [0.0, 0.0, 0.0, 1.0]


def test_time_going_backwards_adds_nothing():
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, burst=1.0)
    budget.withdraw(D, 10.0)
    assert budget.withdraw(D, 5.0) == 1.0


def test_out_of_order_time_does_not_credit_an_interval_twice():
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, burst=3.0)
    for _ in range(3):
        budget.withdraw(D, 10.0)  # 0 tokens at t=10
    assert budget.withdraw(D, 5.0) == 1.0  # -1 (no refill for a step back)
    assert budget.withdraw(D, 10.0) == 2.0  # no time has passed since t=10: -2


def test_zero_floor_means_an_indefinite_wait_in_debt():
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, burst=1.0)
    assert budget.withdraw(D, 0.0) == 0.0
    assert math.isinf(budget.withdraw(D, 0.0))


def test_domains_are_independent():
    budget = RetryBudget(ratio=1.0, min_per_second=1.0, burst=2.0)
    assert [budget.withdraw("a.example", 0.0) for _ in range(3)] == [0.0, 0.0, 1.0]
    assert budget.withdraw("b.example", 0.0) == 0.0  # a's debt is not b's
    budget.deposit("b.example", 0.0)
    assert budget.withdraw("a.example", 0.0) == 2.0  # b's deposit is not a's


def test_buckets_are_an_lru_bounded_by_max_domains():
    budget = RetryBudget(ratio=0.0, min_per_second=1.0, burst=1.0, max_domains=2)
    budget.withdraw("a", 0.0)  # a: 0 tokens
    budget.withdraw("b", 0.0)  # b: 0 tokens
    budget.deposit("a", 0.0)  # touch a: b is now the least recently used
    budget.withdraw("c", 0.0)  # evicts b
    assert budget.withdraw("a", 0.0) == 1.0  # a kept its (empty) bucket
    assert budget.withdraw("b", 0.0) == 0.0  # b was forgotten: a fresh, full bucket
    assert len(budget._buckets) == 2
