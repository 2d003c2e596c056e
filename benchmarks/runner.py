"""Run one scenario crawl: a fresh world in this process, the crawl in a subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from demo_world import World

from benchmarks.contenders import ORACLE_RETRIES, settings
from benchmarks.scenarios import Scenario, good_proxies, urls

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class CrawlOutput:
    outcomes: list[list[Any]]  # [n, origin, ok, at, error]
    stats: dict[str, Any]
    close_reason: str | None
    opened_to_closed: float | None
    world: dict[str, Any]  # World.snapshot() after the crawl
    pages: dict[str, int]
    opened_monotonic: float | None = None  # the spider's opening, on the world's clock
    log_path: Path | None = None  # the crawl's Scrapy log (the gateway logs its concurrency cuts)


def subprocess_env() -> dict[str, str]:
    # The crawl child imports benchmarks.* (contender middlewares); demo_world is installed.
    paths = [str(ROOT), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}


def run_json_crawl(spec: dict[str, Any], log_path: Path, timeout: float) -> dict[str, Any]:
    """Run benchmarks/crawl.py on `spec`; its stderr (the Scrapy log) goes to `log_path`."""
    with tempfile.TemporaryDirectory() as folder:
        spec_path, out_path = Path(folder, "in.json"), Path(folder, "out.json")
        spec_path.write_text(json.dumps(spec))
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("w") as log, contextlib.suppress(subprocess.TimeoutExpired):
            subprocess.run(
                [sys.executable, str(ROOT / "benchmarks" / "crawl.py"), str(spec_path), str(out_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                env=subprocess_env(),
                check=False,
            )
        if not out_path.exists():
            tail = log_path.read_text()[-3000:]
            raise RuntimeError(f"crawl produced no output; log tail:\n{tail}")
        text = out_path.read_text()
        log_path.with_suffix(".json").write_text(text)  # the raw outcomes, beside the log
        result: dict[str, Any] = json.loads(text)
        return result


def run_scenario_crawl(
    scenario: Scenario, contender: str, *, only: str | None, cap: float, log_path: Path
) -> CrawlOutput:
    """Crawl `scenario` with `contender`; `only` restricts the pages to one origin (alone runs)."""
    pages = {only: scenario.pages[only]} if only else dict(scenario.pages)
    world = World()
    scenario.build(world)
    world.start()
    try:
        proxies = [p.url for p in world.proxies.values()]
        good, overrides = good_proxies(world), dict(scenario.settings)
        if contender.startswith("oracle") and scenario.oracle == "retries":
            good, overrides = proxies, {**overrides, **ORACLE_RETRIES}
        # Experiments only (LOG_LEVEL, a gateway setting): results made with it say so in the log.
        overrides.update(json.loads(os.environ.get("BENCH_SETTINGS", "{}")))
        spec = {
            "settings": settings(contender, proxies, good, cap, overrides),
            "urls": urls(world, pages),
        }
        data = run_json_crawl(spec, log_path, timeout=cap + 60)
        snapshot = world.snapshot()
    finally:
        world.stop()
    return CrawlOutput(
        data["outcomes"],
        data["stats"],
        data["close_reason"],
        data["opened_to_closed"],
        snapshot,
        pages,
        opened_monotonic=data.get("opened_monotonic"),
        log_path=log_path,
    )
