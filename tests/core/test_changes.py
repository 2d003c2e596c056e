"""The periodic line's "since the last line" clause (core/changes.py)."""

from __future__ import annotations

from scrapy_gateway.core.changes import Changes
from scrapy_gateway.core.events import (
    Ejected,
    Forgiven,
    GateClosed,
    GateOpened,
    PairEjected,
    PairReadmitted,
    Panic,
    Readmitted,
    Retired,
)
from scrapy_gateway.core.gates import PROVIDER


def test_nothing_new_says_so() -> None:
    changes = Changes()
    assert changes.line({}) == "no change"
    assert changes.line({}) == "no change"


def test_proxies_out_and_back_within_one_interval_both_show_in_the_order_of_an_incident() -> None:
    changes = Changes()
    changes.events(
        [
            Readmitted("http://a:1"),
            GateOpened("shop.example", 12, 3),
            Ejected("http://a:1", "proxy_refused", 10.0),
            PairEjected("http://b:1", "shop.example", "http_403", 30.0),
            Retired("http://c:1", "http_407"),
            Panic("http://d:1", "timeout"),
        ]
    )
    assert changes.line({}) == (
        "out http://a:1, http://b:1 on shop.example; retired http://c:1; back http://a:1; gate opened shop.example"
    )
    assert changes.line({}) == "no change"  # each change is told once


def test_many_names_are_counted_not_listed() -> None:
    changes = Changes(shown=2)
    changes.events([Ejected(f"http://p{i}:1", "timeout", 5.0) for i in range(5)])
    changes.event(Ejected("http://p0:1", "timeout", 5.0))  # again: still one name
    assert changes.line({}) == "out http://p0:1, http://p1:1 (+3 more)"


def test_domains_are_throttled_moved_and_released_by_comparing_the_lines() -> None:
    changes = Changes()
    assert changes.line({"a.example": 4}) == "throttled a.example to 4"
    assert changes.line({"a.example": 4}) == "no change"
    assert changes.line({"a.example": 2, "b.example": 8}) == "throttled a.example 4->2, b.example to 8"
    assert changes.line({"b.example": 8}) == "released a.example"


def test_gates_pairs_and_forgiveness() -> None:
    changes = Changes()
    changes.events(
        [
            GateClosed(PROVIDER, 4.0, 20),
            PairReadmitted("http://b:1", "shop.example"),
            Forgiven(7),
            GateOpened(PROVIDER, 40, 10),
        ]
    )
    assert changes.line({}) == (
        "back http://b:1 on shop.example, 7 forgiven after the provider-wide outage; "
        "gate opened every proxy; gate closed every proxy"
    )


def test_a_proxy_whose_cooldown_ended_is_on_probation_until_a_good_probe_readmits_it() -> None:
    changes = Changes()
    changes.event(Ejected("http://a:1", "proxy_refused", 2.0))
    changes.event(Ejected("http://b:1", "proxy_refused", 2.0))
    assert changes.line({}, out={"http://a:1", "http://b:1"}) == "out http://a:1, http://b:1"
    assert changes.line({}, out={"http://b:1"}) == "on probation http://a:1"  # no event says so
    changes.event(Readmitted("http://a:1"))
    changes.event(Readmitted("http://b:1"))  # b's probation and readmission within one interval
    assert changes.line({}, out=set()) == "back http://a:1, http://b:1"
