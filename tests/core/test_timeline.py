"""timeline.py: bounded series that halve their resolution, and the sampler over the core's state."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from scrapy_gateway.core.faults import Blame, Fault
from scrapy_gateway.core.gateway import Gateway, Policy
from scrapy_gateway.core.proxies import parse_proxy
from scrapy_gateway.core.timeline import OTHER, Failures, Merge, Sampler, SlotView, Timeline

MERGES = {"count": Merge.LAST, "gauge": Merge.MEAN, "peak": Merge.MAX}


def test_a_full_timeline_halves_and_then_merges_samples_in_pairs() -> None:
    timeline = Timeline(MERGES, max_points=4)
    for t in range(4):
        timeline.record(float(t), {("count", ""): t, ("gauge", ""): t, ("peak", ""): 10 - t})
    assert timeline.stride == 2 and timeline.times == [1.0, 3.0]
    assert timeline.series["count", ""] == [1, 3]
    assert timeline.series["gauge", ""] == [0.5, 2.5]
    assert timeline.series["peak", ""] == [10, 8]
    timeline.record(4.0, {("count", ""): 4, ("peak", ""): 1})
    assert timeline.times == [1.0, 3.0]  # half a bucket: not a point yet
    timeline.record(5.0, {("count", ""): 5, ("peak", ""): 9})
    assert timeline.times == [1.0, 3.0, 5.0]
    assert timeline.series["peak", ""][-1] == 9 and timeline.series["gauge", ""][-1] is None
    timeline.record(6.0, {("count", ""): 6})
    timeline.flush()  # the crawl's last sample is shown, alone in its bucket
    assert timeline.times[-1] == 6.0 and timeline.series["count", ""][-1] == 6


def test_a_series_born_late_is_padded_with_gaps() -> None:
    timeline = Timeline(MERGES, max_points=100)
    timeline.record(0.0, {("count", "a"): 1})
    timeline.record(1.0, {("count", "a"): 2, ("count", "b"): 5})
    assert timeline.series["count", "b"] == [None, 5]


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 40), st.integers(1, 2000))
def test_a_counter_keeps_its_exact_last_value_and_the_length_stays_bounded(max_points: int, samples: int) -> None:
    timeline = Timeline(MERGES, max_points=max_points)
    for t in range(samples):
        timeline.record(float(t), {("count", ""): t * 3})
    timeline.flush()
    assert len(timeline.times) <= max_points
    assert timeline.times[-1] == samples - 1 and timeline.series["count", ""][-1] == (samples - 1) * 3
    assert timeline.times == sorted(timeline.times)


def test_failures_by_domain_are_bounded() -> None:
    failures = Failures(max_domains=2)
    for domain in ("a", "b", "c", "d", "a"):
        failures.add(domain, "http_502", "origin", retried=domain != "d")
    assert failures.by_domain == {"a": 2, "b": 1, OTHER: 2}
    assert failures.retried == {("http_502", "origin"): 4} and failures.given_up == {("http_502", "origin"): 1}


def test_the_sampler_tracks_the_busiest_proxies_and_sums_the_whole_pool() -> None:
    proxies = [parse_proxy(f"http://user:pw{i}@10.0.0.{i}:8080") for i in range(1, 6)]
    gateway = Gateway(proxies, Policy())
    sampler = Sampler(gateway, max_tracked=2)
    pool, rng = gateway.pool, random.Random(1)
    for i, proxy in enumerate(proxies):
        for _ in range(i + 1):  # proxy i carries i + 1 requests
            pool.started(proxy.key, "shop.example", 0.0)
            pool.succeeded(proxy.key, "shop.example", 0.5, latency=0.1 * (i + 1))
    pool.started(proxies[0].key, "shop.example", 0.5)
    pool.failed(proxies[0].key, "shop.example", Fault("proxy_refused", Blame.PROXY, hard=True), 0.6, rng)
    sampler.failure("shop.example", "http_502", "origin", retried=True)
    for i in range(5):  # five failures through five paths, nothing working: the gate opens
        gateway.gates.failure("news.example", f"path{i}", 5.0 + i, rng, paths_needed=1)
    sampler.sample(0.7, {"shop.example": SlotView(limit=4, inflight=3)})
    series = sampler.timeline.series
    assert sorted(label for metric, label in series if metric == "requests") == sorted([proxies[4].key, proxies[3].key])
    assert series["pool_requests", ""] == [1 + 1 + 2 + 3 + 4 + 5]
    assert series["pool_failures", ""] == [1] and series["failure_kind", "proxy_refused"] == [1]
    assert series["pool_state", "ejected"] == [1] and series["pool_health_n", ""] == [5]
    assert series["inflight", "shop.example"] == [3] and series["limit", "shop.example"] == [4]
    assert series["errors", "shop.example"] == [1] and series["retries", "origin"] == [1]
    assert series["gate", "news.example"] == [1]
    assert sampler.timeline.times == [0.0]  # seconds since the first sample
    gateway.gates.success(("news.example",), 12.0)
    sampler.sample(2.7, {})
    assert series["gate", "news.example"] == [1, 0] and sampler.timeline.times == [0.0, 2.0]
