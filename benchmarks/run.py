"""Crawl benchmarks: every scenario crawled by every contender, one table.

    python -m benchmarks.run                         # everything (about 10 minutes on 2 cores)
    python -m benchmarks.run --only overload --contenders gateway,oracle

Writes results/crawl-<date>.json and .md (and crawl-latest.*); each crawl's Scrapy log goes to
results/logs/<scenario>-<contender>.log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Mapping

from benchmarks.contenders import CONTENDERS
from benchmarks.measure import Row, add_measures, relate, row_from
from benchmarks.report import RESULTS, markdown_table, plugin_version, text_table, write
from benchmarks.runner import run_scenario_crawl
from benchmarks.scenarios import SCENARIOS, Scenario
from benchmarks.targets import evaluate


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("--contenders", default="", help=f"comma-separated: {', '.join(CONTENDERS)}")
    parser.add_argument("--cap", type=float, default=40.0, help="seconds after which a crawl is closed")
    parser.add_argument("--repeat", type=int, default=1, help="crawls per cell; the one of median wall time is kept")
    args = parser.parse_args()
    args.scenarios = _pick(args.only, SCENARIOS, "scenario")
    args.contender_names = _pick(args.contenders, CONTENDERS, "contender")
    return args


def _pick(text: str, known: Mapping[str, object], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()] or list(known)
    unknown = [n for n in names if n not in known]
    if unknown:
        sys.exit(f"unknown {what}: {', '.join(unknown)}; known: {', '.join(known)}")
    return names


def crawl(scenario: Scenario, contender: str, *, only: str | None, cap: float, repeat: int) -> Row:
    """Crawl `repeat` times; keep the crawl of median wall time (others are noise on a shared box)."""
    rows = []
    for i in range(repeat):
        suffix = ("-alone" if only else "") + (f"-{i + 1}" if repeat > 1 else "")
        log = RESULTS / "logs" / f"{scenario.slug}-{contender}{suffix}.log"
        load = os.getloadavg()[0]
        out = run_scenario_crawl(scenario, contender, only=only, cap=cap, log_path=log)
        row = row_from(scenario, contender, CONTENDERS[contender].retries, out)
        add_measures(row, scenario, out)
        row.load = load
        rows.append(row)
    rows.sort(key=lambda r: r.wall)
    kept = rows[len(rows) // 2]
    kept.walls = [r.wall for r in rows]
    return kept


def crawl_contender(scenario: Scenario, name: str, cap: float, repeat: int, alone: dict[str, float]) -> Row:
    """The contender's crawl of the scenario, after its crawl of the healthy origin alone (into `alone`)."""
    label = f"{scenario.name:12} {scenario.params:34}" if scenario.params else f"{scenario.name:12}"
    if scenario.healthy:
        alone_row = crawl(scenario, name, only=scenario.healthy, cap=cap, repeat=repeat)
        alone[name] = alone_row.origin_wall[scenario.healthy]
        print(f"  {label} {name:9} {scenario.healthy} alone: {alone[name]:.2f}s", flush=True)
    row = crawl(scenario, name, only=None, cap=cap, repeat=repeat)
    print(
        f"  {label} {name:9} ok {row.ok}/{row.pages}, attempts {row.attempts}, "
        f"wall {row.wall:.2f}s ({row.close_reason}; load {row.load:.1f})",
        flush=True,
    )
    return row


def run_scenario(scenario: Scenario, contenders: list[str], cap: float, repeat: int) -> list[Row]:
    cap = scenario.cap or cap
    alone: dict[str, float] = {}
    rows = [crawl_contender(scenario, name, cap, repeat, alone) for name in contenders]
    relate(rows, scenario, alone)
    oracle = next((r for r in rows if r.contender == "oracle"), None)
    for row in rows:
        row.targets = evaluate(row, oracle)
    return rows


def main() -> None:
    args = parse_args()
    version = plugin_version()
    print(f"scrapy-gateway {version}", flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    for name in args.scenarios:
        scenario = SCENARIOS[name]
        print(f"{name}: {scenario.title}", flush=True)
        rows += run_scenario(scenario, args.contender_names, args.cap, args.repeat)
    total = time.monotonic() - started
    if plugin_version() != version:
        print(f"WARNING: scrapy_gateway changed during the run (now {plugin_version()}): rows mix versions")
    print()
    print(text_table(rows))
    print()
    for row in rows:
        if row.contender == "gateway" and row.targets:
            print(f"gateway on {row.scenario}: " + "; ".join(row.targets))
    legend = (
        "\n\nratio: wall time to the last page's outcome, over the oracle's (or the scenario's ideal: pages x "
        "service time / C). healthy: the healthy domain's completion time with the storm over its time alone "
        "(same contender). overload: 502s for being past capacity (share of attempts). goodput: ok pages per "
        "second over the origin's capacity. early: requests before the Retry-After elapsed."
    )
    scenarios = "\n".join(f"- {n}: {SCENARIOS[n].title}, pages {SCENARIOS[n].pages}" for n in args.scenarios)
    md = markdown_table(rows) + legend + f"\n\nScenarios:\n{scenarios}\n\nTotal run time: {total:.0f} s\n"
    json_path, md_path = write("crawl", {"total_seconds": total, "rows": [r.as_json() for r in rows]}, md)
    print(f"\ntotal {total:.0f}s; results in {md_path} and {json_path}")


if __name__ == "__main__":
    main()
