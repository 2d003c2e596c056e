"""End-to-end overhead: an all-success crawl through good proxies, bare Scrapy vs scrapy-gateway.

    python -m benchmarks.overhead [--pages 3000] [--rounds 3]

Bare: stock Scrapy with a uniformly random proxy per request (benchmarks/random_proxy.py, the
least a proxied crawl needs). Gateway: the add-on with the same proxies in GATEWAY_PROXIES. Both
crawl 4 origins (2 KB pages, no service time: the crawl is CPU-bound, so overhead shows fully)
through 4 good proxies with Scrapy's default concurrency; runs alternate, bare first.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from demo_world import OriginSpec, ProxySpec, World

from benchmarks.contenders import RANDOM_PROXY, common
from benchmarks.report import RESULTS, write
from benchmarks.runner import run_json_crawl
from benchmarks.scenarios import urls

ORIGINS = 4
TARGET = 0.97  # issue 8: an all-success crawl keeps >= 97 % of bare Scrapy's throughput


def build() -> World:
    world = World()
    for i in range(ORIGINS):
        world.add_origin(f"site{i}", OriginSpec(body_bytes=2048))
    for i in range(4):
        world.add_proxy(f"good{i}", ProxySpec())
    return world


def one_crawl(variant: str, pages: int, round_no: int) -> dict[str, Any]:
    world = build()
    world.start()
    try:
        proxies = [p.url for p in world.proxies.values()]
        base = {**common(300), "LOG_LEVEL": "WARNING"}
        if variant == "bare":
            settings = {**base, "DOWNLOADER_MIDDLEWARES": RANDOM_PROXY, "BENCH_PROXIES": proxies}
        else:
            settings = {**base, "ADDONS": {"scrapy_gateway.Addon": 0}, "GATEWAY_PROXIES": proxies}
        per_origin = dict.fromkeys(world.origins, pages // ORIGINS)
        spec = {"settings": settings, "urls": urls(world, per_origin)}
        log = RESULTS / "logs" / f"overhead-{variant}-{round_no}.log"
        data = run_json_crawl(spec, log, timeout=360)
    finally:
        world.stop()
    outcomes = data["outcomes"]
    ok = sum(1 for o in outcomes if o[2])
    wall = max((o[3] for o in outcomes), default=0.0)
    return {
        "variant": variant,
        "round": round_no,
        "ok": ok,
        "pages": sum(per_origin.values()),
        "wall": wall,
        "pages_per_second": ok / wall if wall else 0.0,
        "attempts": data["stats"].get("downloader/request_count", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pages", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    started = time.monotonic()
    runs = []
    for round_no in range(1, args.rounds + 1):
        for variant in ("bare", "gateway"):
            run = one_crawl(variant, args.pages, round_no)
            runs.append(run)
            print(
                f"round {round_no} {variant:8} {run['ok']}/{run['pages']} ok in {run['wall']:.2f}s: "
                f"{run['pages_per_second']:.0f} pages/s",
                flush=True,
            )
    median = {
        v: statistics.median(r["pages_per_second"] for r in runs if r["variant"] == v) for v in ("bare", "gateway")
    }
    ratio = median["gateway"] / median["bare"]
    verdict = "met" if ratio >= TARGET else "MISS"
    summary = (
        f"median throughput: bare {median['bare']:.0f} pages/s, gateway {median['gateway']:.0f} pages/s; "
        f"ratio {ratio:.3f} (target >= {TARGET}: {verdict})"
    )
    print(summary)
    total = time.monotonic() - started
    lines = ["| round | variant | ok | wall s | pages/s |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['round']} | {r['variant']} | {r['ok']}/{r['pages']} | {r['wall']:.2f} | {r['pages_per_second']:.0f} |"
        for r in runs
    ]
    md = "\n".join(lines) + f"\n\n{summary}\n\nTotal run time: {total:.0f} s\n"
    json_path, md_path = write("overhead", {"runs": runs, "median": median, "ratio": ratio, "total_seconds": total}, md)
    print(f"total {total:.0f}s; results in {md_path} and {json_path}")


if __name__ == "__main__":
    main()
