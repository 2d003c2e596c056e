"""What the gateway learned survives a dump and load, with cooldowns kept as time remaining."""

from __future__ import annotations

import json
import random

import pytest

from scrapy_gateway.core import state
from scrapy_gateway.core.faults import Blame, Fault
from scrapy_gateway.core.gateway import Gateway, Policy
from scrapy_gateway.core.health import State
from scrapy_gateway.core.proxies import parse_proxy

PROXIES = [parse_proxy(f"http://u{i}:pw@10.0.0.{i}:8000") for i in range(3)]
REFUSED = Fault("proxy_refused", Blame.PROXY, hard=True)
BANNED = Fault("http_502", Blame.PAIR)


def _learned() -> Gateway:
    gateway = Gateway(PROXIES, Policy())
    rng = random.Random(1)
    gateway.sent(PROXIES[0].key, "a.example", 100.0, first_attempt=True)
    gateway.pool.failed(PROXIES[0].key, "a.example", REFUSED, 100.0, rng)
    gateway.sent(PROXIES[1].key, "b.example", 100.0, first_attempt=True)
    gateway.pool.failed(PROXIES[1].key, "b.example", BANNED, 100.0, rng)
    gateway.concurrency.overloaded("b.example", 8, sent_at=99.0, now=100.0)
    return gateway


def test_round_trip_through_json_restarts_the_clock() -> None:
    before = _learned()
    saved = json.loads(json.dumps(state.dump(before, now=104.0)))
    after = Gateway(PROXIES, Policy())
    assert state.load(after, saved, now=5000.0) == 3
    ejected = after.pool.records[PROXIES[0].key].health
    assert ejected.state is State.EJECTED
    assert ejected.until == pytest.approx(5000.0 + before.pool.records[PROXIES[0].key].health.until - 104.0)
    assert after.pool.records[PROXIES[0].key].failures == {"proxy_refused": 1}
    assert after.pool.pairs[(PROXIES[1].key, "b.example")].state is State.EJECTED
    assert after.pool.records[PROXIES[1].key].health.state is State.ACTIVE  # a ban is per domain
    assert after.concurrency.limit("b.example") == 6


def test_unknown_proxies_are_ignored_and_junk_is_refused() -> None:
    saved = state.dump(_learned(), now=100.0)
    smaller = Gateway(PROXIES[2:], Policy())
    assert state.load(smaller, saved, now=0.0) == 1
    assert (PROXIES[1].key, "b.example") not in smaller.pool.pairs
    for junk in ({}, {"version": 99}, {"version": 1, "proxies": {"x": 1}}, {"version": 1}):
        with pytest.raises(ValueError):
            state.load(Gateway(PROXIES, Policy()), junk, now=0.0)


def test_a_proxy_that_worked_keeps_its_short_cooldowns_and_strikes_after_a_resume() -> None:
    before = Gateway(PROXIES, Policy())
    rng = random.Random(1)
    key = PROXIES[2].key
    before.sent(key, "a.example", 10.0, first_attempt=True)
    before.pool.succeeded(key, "a.example", 10.5, latency=0.1)
    health = before.pool.records[key].health
    health.eject(before.policy.health, 20.0, rng)
    saved = json.loads(json.dumps(state.dump(before, now=20.0)))
    after = Gateway(PROXIES, Policy())
    state.load(after, saved, now=0.0)
    restored = after.pool.records[key].health
    assert restored.strikes == 1.0
    restored.usable(restored.until)
    restored.eject(after.policy.health, restored.until, rng)  # its probe failed: 2 s, not 20
    assert restored.until - restored.ejected_at <= 2.0 * 1.2


def test_strikes_forgiven_before_a_pause_stay_forgiven() -> None:
    before = Gateway(PROXIES, Policy())
    rules = before.policy.health
    health = before.pool.records[PROXIES[2].key].health
    health.succeed(rules, 0.0)
    health.eject(rules, 1.0, random.Random(1))
    health.usable(health.until)
    health.succeed(rules, health.until)
    saved = state.dump(before, now=health.until + 10 * rules.cooldown_base)  # an hour in service, say
    assert saved["proxies"][PROXIES[2].key]["strikes"] == 0.0
