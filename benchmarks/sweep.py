"""The time sweep (issue 8, "Time is the budget"): every cell of benchmarks/grid.py, crawled by
every contender side by side, one table.

    python -m benchmarks.sweep                      # the full grid (about an hour on 2 cores)
    python -m benchmarks.sweep --quick              # one cell per scenario kind (about 12 minutes)
    python -m benchmarks.sweep --only blackhole,large --timeouts 5,30 --contenders gateway,oracle
    python -m benchmarks.sweep --list               # the cells and their time caps, without crawling

Writes results/sweep-<stamp>.md and .json, and sweep-latest.*; each crawl's Scrapy log and raw
outcomes go to results/logs/<scenario>-<params>-<contender>.log (not committed). Crawls run one
after the other: their wall times need the CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace

from benchmarks import grid
from benchmarks.contenders import CONTENDERS
from benchmarks.measure import Row, ideal_row, relate
from benchmarks.report import plugin_version, sources_digest, sweep_markdown, write
from benchmarks.run import crawl_contender
from benchmarks.scenarios import Scenario
from benchmarks.targets import evaluate_sweep

DEFAULT_CONTENDERS = ("stock", "rotating", "gateway", "oracle")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one cell per scenario kind")
    parser.add_argument("--only", default="", help="comma-separated scenario kinds (e.g. blackhole,overload)")
    parser.add_argument("--timeouts", default="", help="comma-separated DOWNLOAD_TIMEOUT values to keep (e.g. 5,30)")
    parser.add_argument(
        "--contenders", default=",".join(DEFAULT_CONTENDERS), help=f"comma-separated: {', '.join(CONTENDERS)}"
    )
    parser.add_argument("--repeat", type=int, default=1, help="crawls per cell; the one of median wall time is kept")
    parser.add_argument("--list", action="store_true", help="print the cells and exit")
    args = parser.parse_args()
    args.contender_names = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in args.contender_names if c not in CONTENDERS]
    if unknown:
        sys.exit(f"unknown contender: {', '.join(unknown)}; known: {', '.join(CONTENDERS)}")
    return args


def select(args: argparse.Namespace) -> list[Scenario]:
    cells = grid.quick() if args.quick else grid.full()
    kinds = {k.strip() for k in args.only.split(",") if k.strip()}
    known = sorted({c.name for c in grid.full()})
    unknown = kinds - set(known)
    if unknown:
        sys.exit(f"unknown scenario kind: {', '.join(sorted(unknown))}; known: {', '.join(known)}")
    timeouts = {float(t) for t in args.timeouts.split(",") if t.strip()}
    return [c for c in cells if (not kinds or c.name in kinds) and (not timeouts or c.timeout in timeouts)]


def run_cell(scenario: Scenario, contenders: list[str], repeat: int) -> list[Row]:
    assert scenario.cap is not None
    rows: list[Row] = []
    alone: dict[str, float] = {}
    for name in contenders:
        if name == "oracle" and scenario.oracle == "ideal":
            rows.append(ideal_row(scenario))
            continue
        if name == "oracle" and scenario.oracle == "told":
            rows.append(told_row(scenario, repeat))
            continue
        row = crawl_contender(scenario, name, scenario.cap, repeat, alone)
        if name.startswith("oracle") and scenario.oracle == "retries":
            row.retries = "RETRY_TIMES=10"
        rows.append(row)
    relate(rows, scenario, alone)
    oracle = next((r for r in rows if r.contender == "oracle"), None)
    for row in rows:
        if row.goodput is not None and oracle is not None and oracle.goodput:
            row.measures["goodput_told"] = row.goodput / oracle.goodput
        row.targets = evaluate_sweep(row, scenario, oracle)
    return rows


def told_row(scenario: Scenario, repeat: int) -> Row:
    """The overload cells' oracle: the good proxies, the per-domain limit set to the capacity, and
    the gateway's downloader to enforce it (stock Scrapy under asyncio lets a slot exceed its
    limit). Its goodput is what this machine serves at that capacity: the 50 ms pages come back a
    few ms late each while the world and the crawler share two cores."""
    assert scenario.cap is not None and scenario.told is not None
    told = replace(scenario, settings={**scenario.settings, "CONCURRENT_REQUESTS_PER_DOMAIN": scenario.told})
    row = crawl_contender(told, "oracle-8", scenario.cap, repeat, {})
    row.contender, row.retries = "oracle", f"told {scenario.told} per domain"
    return row


def main() -> None:
    args = parse_args()
    cells = select(args)
    if args.list:
        for c in cells:
            print(f"{c.name:15} {c.params:34} cap {c.cap:5.0f}s  {c.title}")
        return
    version, digest = plugin_version(), sources_digest()
    print(f"scrapy-gateway {version}; {len(cells)} cells x {len(args.contender_names)} contenders", flush=True)
    started = time.monotonic()
    rows: list[Row] = []
    for cell in cells:
        print(f"{cell.name} {cell.params}: {cell.title}", flush=True)
        rows += run_cell(cell, args.contender_names, args.repeat)
    total = time.monotonic() - started
    if sources_digest() != digest:  # a commit of benchmarks/ alone does not change what was measured
        print(f"WARNING: scrapy_gateway changed during the run (now {plugin_version()}): rows mix versions")
    table = sweep_markdown(rows)
    misses = [
        f"- {r.scenario} {r.params}: " + "; ".join(t for t in r.targets if ": MISS" in t)
        for r in rows
        if r.contender == "gateway" and any(": MISS" in t for t in r.targets)
    ]
    command = "python -m benchmarks.sweep " + " ".join(sys.argv[1:])
    md = (
        f"Command: `{command.strip()}`; contenders {', '.join(args.contender_names)}; repeat {args.repeat}.\n\n"
        + table
        + '\n\nTargets are the gateway\'s (benchmarks/README.md, "Sweep targets"); other rows are context.\n\n'
        + "Gateway misses:\n"
        + ("\n".join(misses) or "- none")
        + f"\n\nTotal run time: {total:.0f} s\n"
    )
    print("\n" + md)
    payload = {"command": command, "total_seconds": total, "rows": [r.as_json() for r in rows]}
    json_path, md_path = write("sweep", payload, md)
    print(f"total {total:.0f}s; results in {md_path} and {json_path}")


if __name__ == "__main__":
    main()
