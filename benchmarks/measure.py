"""Turn a crawl's outcomes, Scrapy stats and the world's counters into one table row."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from benchmarks.runner import CrawlOutput
from benchmarks.scenarios import Scenario


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
    attempts = int(out.stats.get("downloader/request_count", 0))
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
