"""Memory over a long crawl: 100,000 requests through a pool, RSS sampled as the crawl goes.

    python benchmarks/soak_memory.py [--pages 100000]

The world (origins and proxies) runs in this process's background thread; the crawl runs in a
child process that samples its own RSS every 2 s and prints the samples as JSON at the end.
Flat means: the RSS after the first tenth of the crawl and at its end differ by little, while
the crawl's own structures (scheduler queue, seen-set) are kept small by feeding requests lazily.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from demo_world import OriginSpec, ProxySpec, World

ROOT = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, os, sys, time
import scrapy
from scrapy.crawler import CrawlerProcess
from scrapy.utils.asyncio import create_looping_call

spec = json.loads(sys.argv[1])
samples = []
done = {"ok": 0, "failed": 0}

def rss_mib():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

class Soak(scrapy.Spider):
    name = "soak"
    custom_settings = {"SCHEDULER_PRIORITY_QUEUE": "scrapy.pqueues.ScrapyPriorityQueue"}

    async def start(self):
        origins = spec["origins"]
        for i in range(spec["pages"]):
            # dont_filter: no seen-set growing with the crawl, so what grows is ours.
            yield scrapy.Request(origins[i % len(origins)] + f"/s/{i}", dont_filter=True, errback=self.failed)

    def parse(self, response):
        done["ok"] += 1

    def failed(self, failure):
        done["failed"] += 1

def sample():
    now = round(time.monotonic() - t0, 1)
    samples.append({"t": now, "done": done["ok"] + done["failed"], "rss_mib": round(rss_mib(), 1)})

t0 = time.monotonic()
process = CrawlerProcess({**spec["settings"], "LOG_LEVEL": "WARNING"})
crawler = process.create_crawler(Soak)
def opened(spider):
    loop = create_looping_call(sample)
    loop.start(2.0, now=True)
crawler.signals.connect(opened, signal=scrapy.signals.spider_opened)
process.crawl(crawler)
process.start()
sample()
print(json.dumps({"samples": samples, "done": done}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pages", type=int, default=100_000)
    args = parser.parse_args()
    with World() as world:
        origins = [world.add_origin(f"o{i}", OriginSpec(flaky=0.05, seed=i)) for i in range(20)]
        proxies = [world.add_proxy(f"p{i}", ProxySpec()) for i in range(8)]
        proxies.append(world.add_proxy("flaky", ProxySpec(mode="flaky", flaky_p=0.3, seed=9)))
        proxies.append(world.add_proxy("dead", ProxySpec(mode="dead")))
        world.start()
        spec = {
            "pages": args.pages,
            "origins": [o.base_url for o in origins],
            "settings": {
                "ADDONS": {"scrapy_gateway.Addon": 0},
                "GATEWAY_PROXIES": [p.url for p in proxies],
                "GATEWAY_BACKOFF_BASE": 0.1,
                "CONCURRENT_REQUESTS": 64,
                "TELNETCONSOLE_ENABLED": False,
            },
        }
        done = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(spec)], capture_output=True, text=True, check=True, cwd=ROOT
        )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    samples = result["samples"]
    tenth = next(s for s in samples if s["done"] >= args.pages / 10)
    print(f"requests: {args.pages}, outcomes: {result['done']}")
    start, end = samples[0]["rss_mib"], samples[-1]["rss_mib"]
    print(f"RSS at start {start} MiB, after 10 % {tenth['rss_mib']} MiB, at end {end} MiB")
    for s in samples[:: max(1, len(samples) // 12)]:
        print(f"  t={s['t']:>6}s done={s['done']:>7} rss={s['rss_mib']} MiB")


if __name__ == "__main__":
    main()
