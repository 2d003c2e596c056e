"""Turn a crawl's outcomes, Scrapy stats and the world's counters into one table row."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.runner import CrawlOutput
from benchmarks.scenarios import Scenario
from scrapy_gateway.stats import GATES_HELD_AT_START


@dataclass
class Row:
    scenario: str
    contender: str
    retries: str
    pages: int
    ok: int
    failed: int
    unfinished: int
    attempts: int
    attempts_per_ok: float | None
    wall: float  # seconds from spider open to the last page's outcome
    close_reason: str | None
    by_origin: dict[str, list[int]]  # origin -> [ok, failed, unfinished]
    origin_wall: dict[str, float]  # origin -> seconds to its last outcome
    overload: int  # 502s the origins gave for being past capacity
    early: int  # requests that arrived before their Retry-After had elapsed
    max_in_flight: int
    errors: dict[str, int]  # final errors by kind
    ratio: float | None = None  # wall / oracle's wall, or / the scenario's ideal
    ratio_base: str = ""
    healthy_alone: float | None = None
    healthy_slowdown: float | None = None
    goodput: float | None = None  # share of the origin's capacity
    walls: list[float] = field(default_factory=list)  # every repeat's wall time (the row is the median's)
    load: float = 0.0  # 1-minute load average when the crawl started (the box may be shared)
    targets: list[str] = field(default_factory=list)  # "name: ok|MISS (value vs target)"
    stats: dict[str, Any] = field(default_factory=dict)
    params: str = ""  # the sweep cell's parameters
    measures: dict[str, Any] = field(default_factory=dict)  # the sweep's scenario-specific measures

    @property
    def overload_share(self) -> float | None:
        return self.overload / self.attempts if self.attempts else None

    def as_json(self) -> dict[str, Any]:
        return {**asdict(self), "overload_share": self.overload_share}


def row_from(scenario: Scenario, contender: str, retries: str, out: CrawlOutput) -> Row:
    by_origin: dict[str, list[int]] = {name: [0, 0, 0] for name in out.pages}
    origin_wall: dict[str, float] = dict.fromkeys(out.pages, 0.0)
    errors: dict[str, int] = {}
    seen: set[int] = set()
    for n, origin, ok, at, error in out.outcomes:
        if n in seen:
            continue  # never expected: every request ends once; ignore a duplicate rather than count it
        seen.add(n)
        if error in ("RetryCancelled",):
            by_origin[origin][2] += 1
            continue
        by_origin[origin][0 if ok else 1] += 1
        origin_wall[origin] = max(origin_wall[origin], at)
        if not ok:
            errors[error] = errors.get(error, 0) + 1
    for name, count in out.pages.items():
        by_origin[name][2] += count - sum(by_origin[name])
    ok = sum(v[0] for v in by_origin.values())
    failed = sum(v[1] for v in by_origin.values())
    pages = sum(out.pages.values())
    # Scrapy counts a request as it enters the downloader; the gateway's held back as their
    # transfer started (an outage gate opened while they queued for their slot) never left.
    attempts = int(out.stats.get("downloader/request_count", 0)) - int(out.stats.get(GATES_HELD_AT_START, 0))
    origins = out.world["origins"]
    wall = max(origin_wall.values(), default=0.0)
    if pages - ok - failed:
        wall = max(wall, out.opened_to_closed or 0.0)
    row = Row(
        scenario=scenario.name,
        contender=contender,
        retries=retries,
        pages=pages,
        ok=ok,
        failed=failed,
        unfinished=pages - ok - failed,
        attempts=attempts,
        attempts_per_ok=attempts / ok if ok else None,
        wall=wall,
        close_reason=out.close_reason,
        by_origin=by_origin,
        origin_wall=origin_wall,
        overload=sum(o["overload"] for o in origins.values()),
        early=sum(o["early"] for o in origins.values()),
        max_in_flight=max((o["max_in_flight"] for o in origins.values()), default=0),
        errors=errors,
        stats=out.stats,
        params=scenario.params,
    )
    if scenario.capacity and wall > 0:
        row.goodput = ok / wall / scenario.capacity
    if scenario.ideal:
        row.ratio, row.ratio_base = wall / scenario.ideal, "ideal"
    return row


def relate(rows: list[Row], scenario: Scenario, alone: dict[str, float]) -> None:
    """Fill what compares rows: the ratio to the oracle, the healthy domain's slowdown."""
    oracle = next((r for r in rows if r.contender == "oracle"), None)
    for row in rows:
        if row.ratio is None and oracle is not None and oracle.wall > 0:
            row.ratio, row.ratio_base = row.wall / oracle.wall, "oracle"
        if scenario.healthy and row.contender in alone:
            row.healthy_alone = alone[row.contender]
            together = row.origin_wall.get(scenario.healthy, 0.0)
            if row.healthy_alone > 0:
                row.healthy_slowdown = together / row.healthy_alone


# The gateway's log line for a cut (scrapy_gateway/report.py): the minimum it set is the measure.
_CUT = re.compile(r"Concurrency of \S+ lowered from \d+ to (\d+)")


def min_limit(log_path: Path | None) -> int | None:
    """The lowest per-domain concurrency limit the gateway logged setting; None: it never cut."""
    if log_path is None or not log_path.exists():
        return None
    limits = [int(m.group(1)) for m in _CUT.finditer(log_path.read_text(errors="replace"))]
    return min(limits, default=None)


def add_measures(row: Row, scenario: Scenario, out: CrawlOutput) -> None:
    """The sweep's scenario-specific measures, into row.measures."""
    m = row.measures
    if scenario.capacity:
        m["overload_share"] = row.overload_share
        m["goodput"] = row.goodput
        m["min_limit"] = min_limit(out.log_path)
        m["cuts"] = int(out.stats.get("gateway/concurrency/decreases", 0))
        # Rooms slow start gave back (concurrency.py, doubtful): no cut, but shown.
        m["held_back"] = int(out.stats.get("gateway/concurrency/held_back", 0))
    if scenario.name == "retry_after":
        m["early"] = row.early
    window = scenario.window
    if window is None:
        return
    # Failed answers during the outage: the proxies' own errors and the origins' own 502s.
    m["outage_answers"] = sum(p["own_errors"] for p in out.world["proxies"].values()) + sum(
        o["statuses"].get("502", 0) - o["overload"] for o in out.world["origins"].values()
    )
    clock = out.world["epoch"] if window.clock == "world" else out.world["origins"][window.clock]["first_request_at"]
    if clock is None or out.opened_monotonic is None:
        return
    end = clock - out.opened_monotonic + window.end  # the outage's end, in seconds since the spider opened
    waiting = [o for o in out.outcomes if o[1] in window.origins]
    pages = sum(out.pages[o] for o in window.origins)
    ok_before = sum(1 for _, _, ok, at, _ in waiting if ok and at <= end)
    ok = sum(1 for _, _, ok, _, _ in waiting if ok)
    done = max((at for _, _, _, at, _ in waiting), default=0.0)
    if ok < pages:
        done = max(done, row.wall)  # a lost page is never done
    m["outage_end"] = end
    m["after_end"] = done - end
    # What is allowed after the end: 1.5 s to notice, then the pages left at their normal pace.
    m["after_allowed"] = 1.5 + (pages - ok_before) * scenario.service / scenario.per_domain
    m["all_ok"] = ok == pages


def ideal_row(scenario: Scenario) -> Row:
    """The oracle row of a scenario that no subset of its pool solves: its ideal time, not a crawl."""
    assert scenario.ideal is not None
    pages = sum(scenario.pages.values())
    return Row(
        scenario=scenario.name,
        contender="oracle",
        retries="ideal",
        pages=pages,
        ok=pages,
        failed=0,
        unfinished=0,
        attempts=0,
        attempts_per_ok=None,
        wall=scenario.ideal,
        close_reason="computed",
        by_origin={},
        origin_wall={},
        overload=0,
        early=0,
        max_in_flight=0,
        errors={},
        ratio=1.0,
        ratio_base="ideal",
        params=scenario.params,
    )
