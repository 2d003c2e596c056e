"""The scrapy-gateway demo in one command: `python example_project/run_demo.py`.

It starts the demo world (loopback origins and proxies, in a background thread), crawls 60 pages on
each origin through the proxies with the demo project's settings, and stops the world. Watch the log
for the gateway taking the dead and 502-ing proxies out of rotation, backing off on the storming
"news" origin, lowering the concurrency of the "slow" one, its periodic "Gateway:" line, its proxy
table and the stats. At close it writes the health report, gateway-report.html in the current
folder (open it in a browser). The exit status is 0 only if every page was fetched.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import fields
from pathlib import Path
from typing import Any

# demo (the Scrapy project) imports from this script's folder, which Python puts first on sys.path;
# demo_world is installed with the project.
from demo.spiders.demo import DemoSpider
from demo_world import World, build
from scrapy.crawler import CrawlerProcess
from scrapy.utils.project import get_project_settings

os.environ["SCRAPY_SETTINGS_MODULE"] = "demo.settings"  # read by get_project_settings()


def _unusual(spec: Any) -> list[str]:
    """The fields of an OriginSpec or ProxySpec that differ from the defaults, credentials left out."""
    return [
        f"{f.name}={getattr(spec, f.name)!r}"
        for f in fields(spec)
        if f.name != "credentials" and getattr(spec, f.name) != f.default
    ]


def legend(world: World) -> str:
    """Which address is which, since the log names origins by IP and proxies by address."""
    lines = ["demo world (the log names origins by IP, proxies by address):"]
    for name, origin in world.origins.items():
        lines.append(f"  origin {name:<12} {origin.host:<32} {', '.join(_unusual(origin.spec)) or 'healthy'}")
    for name, proxy in world.proxies.items():
        user = f"{proxy.spec.credentials[0]}:***@" if proxy.spec.credentials else ""
        address = f"http://{user}{proxy.host}:{proxy.port}"
        notes = _unusual(proxy.spec) + (["needs credentials"] if user else [])
        lines.append(f"  proxy  {name:<12} {address:<32} {', '.join(notes) or 'healthy'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, default=60, help="pages per origin (default 60)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    world = build("demo").start()
    try:
        where = world.describe()
        print(legend(world), flush=True)
        settings = get_project_settings()
        # The world's proxy URLs; the "auth" one carries user:pass, which the gateway never logs.
        settings.set("GATEWAY_PROXIES", list(where["proxies"].values()), priority="cmdline")
        process = CrawlerProcess(settings)
        crawler = process.create_crawler(DemoSpider)
        process.crawl(crawler, origins=where["origins"], pages=args.pages)
        process.start()
    finally:
        world.stop()

    spider = crawler.spider
    fetched = sum(spider.ok.values()) if isinstance(spider, DemoSpider) else 0
    expected = args.pages * len(where["origins"])
    print(
        f"demo: {fetched}/{expected} pages fetched in {time.monotonic() - started:.1f}s; "
        "see the gateway stats and proxy table above",
        flush=True,
    )
    report = settings.get("GATEWAY_REPORT_FILE")
    if report and Path(report).is_file():
        print(f"demo: health report in {Path(report).resolve()} (open it in a browser)", flush=True)
    return 0 if fetched == expected else 1


if __name__ == "__main__":
    sys.exit(main())
