"""Micro-benchmarks of the decision core, without Scrapy: what one request costs the gateway.

    python -m benchmarks.micro [--quick]

Per request, as the middleware does: `admit()` (outage gates), `route()` (pick a proxy), `sent()`,
then `on_success()` with the download's latency (latency tracking on) or,
for a proxy that answers its own 502, `classify_status()` + `on_failure()`. Pools of 10, 1,000 and
100,000 proxies, pages spread over 10,000 domains, a simulated clock advancing 1 ms per request.
Also: memory per proxy and per (proxy, domain) record (tracemalloc), and a simulated broad crawl of
1,000,000 domains checking that per-domain and per-pair state stays bounded.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

from benchmarks.report import write
from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.core.faults import classify_status
from scrapy_gateway.core.gateway import Gateway, Policy
from scrapy_gateway.core.pool import Pick
from scrapy_gateway.core.proxies import parse_proxy

DOMAINS = 10_000
TARGET_US = 20.0


def make_gateway(n_proxies: int, policy: Policy | None = None) -> Gateway:
    proxies = [parse_proxy(f"http://user{i}:secret@proxy{i % 97}.example:{3000 + i % 60000}") for i in range(n_proxies)]
    return Gateway(proxies, policy or Policy())


class Crawl:
    """Drives a Gateway like the middleware: one call per request, on a simulated clock."""

    def __init__(self, gateway: Gateway, bad_share: float, throttle_share: float = 0.0, seed: int = 1) -> None:
        self.gw = gateway
        self.rng = random.Random(seed)
        keys = [r.proxy.key for r in gateway.pool]
        self.bad = set(random.Random(seed + 1).sample(keys, int(len(keys) * bad_share)))
        self.throttle_share = throttle_share
        self.now = 1000.0

    def request(self, domain: str) -> None:
        gw, now = self.gw, self.now
        self.now += 0.001
        gw.admit(domain, now, via_pool=True)  # the outage gates' check, as process_request makes it
        choice = gw.route(domain, now, self.rng)
        if not isinstance(choice, Pick):
            return
        key = choice.proxy.key
        gw.sent(key, domain, now, first_attempt=True)
        if key in self.bad:
            fault = classify_status(502, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=120.0)
        elif self.throttle_share and self.rng.random() < self.throttle_share:
            fault = classify_status(503, {}, via_proxy=True, in_tunnel=False, now_epoch=0.0, retry_after_cap=120.0)
        else:
            # With its download latency, as Scrapy reports it: latency tracking on.
            gw.on_success(key, domain, domain, now, 0.05 + 0.01 * self.rng.random())
            return
        attempt = Attempt(5, 10, proxy=key, sent_at=now)
        gw.on_failure(fault, attempt, domain=domain, slot=domain, ceiling=8, now=now, rng=self.rng)


def per_request(n_proxies: int, bad_share: float, warmup: int, measured: int) -> dict[str, Any]:
    crawl = Crawl(make_gateway(n_proxies), bad_share)
    domains = [f"site{i}.example" for i in range(DOMAINS)]
    pick = random.Random(7).choice
    for _ in range(warmup):
        crawl.request(pick(domains))
    samples = []
    clock = time.perf_counter_ns
    gc.collect()
    for _ in range(measured):
        domain = pick(domains)
        start = clock()
        crawl.request(domain)
        samples.append(clock() - start)
    samples.sort()
    us = [s / 1000 for s in samples]
    return {
        "proxies": n_proxies,
        "bad_share": bad_share,
        "requests": measured,
        "median_us": statistics.median(us),
        "p90_us": us[int(0.9 * len(us))],
        "p99_us": us[int(0.99 * len(us))],
        "mean_us": statistics.fmean(us),
        "pairs": len(crawl.gw.pool.pairs),
        "ejected": crawl.gw.pool.counts(crawl.now)["ejected"],
    }


def _traced(build: Callable[[], Any]) -> tuple[int, Any]:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    kept = build()
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    return grown, kept


def memory(n_proxies: int, pairs_proxies: int, pairs_domains: int) -> dict[str, Any]:
    per_proxy, _ = _traced(lambda: make_gateway(n_proxies))
    gw = make_gateway(pairs_proxies, Policy(max_pairs=pairs_proxies * pairs_domains))
    keys = [r.proxy.key for r in gw.pool]
    domains = [f"site{i}.example" for i in range(pairs_domains)]

    def pair_records() -> None:
        for d in domains:
            for k in keys:
                gw.pool.pair(k, d)

    per_pair, _ = _traced(pair_records)
    gw2 = make_gateway(pairs_proxies, Policy(max_pairs=pairs_proxies * pairs_domains))

    def full_path() -> None:  # sent + on_success on every pair: pool pair, judge trails, budget
        now = 1000.0
        for d in domains:
            for k in keys:
                gw2.sent(k, d, now, first_attempt=True)
                gw2.on_success(k, d, d, now)
                now += 0.001

    per_pair_full, _ = _traced(full_path)
    gw3 = make_gateway(pairs_proxies)
    crawl = Crawl(gw3, 0.0)
    many = [f"broad{i}.example" for i in range(DOMAINS)]

    def new_domains() -> None:
        for d in many:
            crawl.request(d)

    per_domain, _ = _traced(new_domains)
    n_pairs = pairs_proxies * pairs_domains
    return {
        "per_proxy_bytes": per_proxy / n_proxies,
        "proxies": n_proxies,
        "per_pair_record_bytes": per_pair / n_pairs,
        "per_pair_full_path_bytes": per_pair_full / n_pairs,
        "pairs": n_pairs,
        "per_new_domain_bytes": per_domain / DOMAINS,
    }


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def broad_crawl(n_domains: int, n_proxies: int) -> dict[str, Any]:
    """One page per domain, 10 % bad proxies, 2 % origin 503s (so every per-domain table fills)."""
    policy = Policy()
    gw = make_gateway(n_proxies, policy)
    crawl = Crawl(gw, bad_share=0.1, throttle_share=0.02)
    checkpoints = {1_000, 10_000, 100_000, 250_000, 500_000, n_domains}
    rows = []
    started = time.perf_counter()
    for i in range(1, n_domains + 1):
        crawl.request(f"d{i}.example")
        if i in checkpoints:
            rows.append(
                {
                    "domains_seen": i,
                    "pairs": len(gw.pool.pairs),
                    "judge_domains": len(gw.judge._domains),
                    "judge_proxies": len(gw.judge._proxies),
                    "budget_domains": len(gw.budget._buckets),
                    "limited_slots": len(gw.concurrency._limits),
                    "rss_mb": round(_rss_mb(), 1),
                    "seconds": round(time.perf_counter() - started, 1),
                }
            )
    last = rows[-1]
    bounded = (
        last["pairs"] <= policy.max_pairs
        and last["judge_domains"] <= policy.max_domains
        and last["budget_domains"] <= policy.max_domains
        and last["limited_slots"] <= policy.max_domains
    )
    return {"proxies": n_proxies, "max_pairs": policy.max_pairs, "max_domains": policy.max_domains,
            "checkpoints": rows, "bounded": bounded}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer requests and a 100,000-domain broad crawl")
    args = parser.parse_args()
    warmup, measured = (5_000, 20_000) if args.quick else (30_000, 100_000)
    started = time.monotonic()
    timing = []
    for n in (10, 1_000, 100_000):
        for bad in (0.0, 0.1):
            result = per_request(n, bad, warmup, measured)
            timing.append(result)
            print(
                f"{n:>7} proxies, {int(bad * 100):>2}% bad: median {result['median_us']:.1f} us, "
                f"p90 {result['p90_us']:.1f}, p99 {result['p99_us']:.1f}, mean {result['mean_us']:.1f} "
                f"({result['pairs']} pairs tracked, {result['ejected']} ejected)",
                flush=True,
            )
    mem = memory(100_000, 1_000, 100)
    print(
        f"memory: {mem['per_proxy_bytes']:.0f} B per proxy; {mem['per_pair_record_bytes']:.0f} B per (proxy, domain) "
        f"health record, {mem['per_pair_full_path_bytes']:.0f} B per pair through sent/on_success; "
        f"{mem['per_new_domain_bytes']:.0f} B per new domain (1 request)",
        flush=True,
    )
    broad = broad_crawl(100_000 if args.quick else 1_000_000, 1_000)
    for row in broad["checkpoints"]:
        print("broad crawl: " + ", ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    print(f"broad crawl state bounded by max_pairs/max_domains: {broad['bounded']}")
    total = time.monotonic() - started
    md = _markdown(timing, mem, broad, total)
    json_path, md_path = write("micro", {"timing": timing, "memory": mem, "broad": broad, "total_seconds": total}, md)
    print(f"total {total:.0f}s; results in {md_path} and {json_path}")


def _markdown(timing: list[dict[str, Any]], mem: dict[str, Any], broad: dict[str, Any], total: float) -> str:
    lines = [
        f"Per request (route + sent + on_success/on_failure), {DOMAINS} domains; target: median <= {TARGET_US} us "
        "at 100,000 proxies.",
        "",
        "| proxies | bad proxies | median us | p90 us | p99 us | mean us | pairs tracked | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for t in timing:
        verdict = "-" if t["proxies"] != 100_000 else ("met" if t["median_us"] <= TARGET_US else "MISS")
        lines.append(
            f"| {t['proxies']} | {int(t['bad_share'] * 100)}% | {t['median_us']:.1f} | {t['p90_us']:.1f} | "
            f"{t['p99_us']:.1f} | {t['mean_us']:.1f} | {t['pairs']} | {verdict} |"
        )
    lines += [
        "",
        f"Memory (tracemalloc): {mem['per_proxy_bytes']:.0f} B per proxy ({mem['proxies']} proxies); "
        f"{mem['per_pair_record_bytes']:.0f} B per (proxy, domain) health record, "
        f"{mem['per_pair_full_path_bytes']:.0f} B per pair through sent/on_success ({mem['pairs']} pairs); "
        f"{mem['per_new_domain_bytes']:.0f} B per new domain.",
        "",
        f"Broad crawl, {broad['proxies']} proxies, one page per domain (max_pairs {broad['max_pairs']}, "
        f"max_domains {broad['max_domains']}); bounded: {broad['bounded']}",
        "",
        "| domains seen | pairs | judge domains | judge proxies | budget domains | limited slots | RSS MB | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in broad["checkpoints"]:
        lines.append("| " + " | ".join(str(v) for v in r.values()) + " |")
    lines += ["", f"Total run time: {total:.0f} s"]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
