"""The issue's targets, checked on every row (they are the gateway's; other rows show context)."""

from __future__ import annotations

from benchmarks.measure import Row

POOL_SLACK = {"dead": 0.05, "bad_gateway": 0.05, "banned": 0.05, "mixed": 0.15}
POOL_WALL = 1.2
OVERLOAD_SHARE = 0.03
OVERLOAD_WALL = 1.3
HEALTHY_SLOWDOWN = 1.1


def _check(name: str, value: float | None, limit: float, fmt: str = "%.2f") -> str:
    if value is None:
        return f"{name}: n/a"
    verdict = "ok" if value <= limit + 1e-9 else "MISS"
    return f"{name}: {verdict} ({fmt % value} vs <= {fmt % limit})"


def _all_ok(row: Row) -> str:
    verdict = "ok" if row.ok == row.pages else "MISS"
    return f"100% ok: {verdict} ({row.ok}/{row.pages})"


def evaluate(row: Row, oracle: Row | None) -> list[str]:
    if row.scenario in POOL_SLACK:
        out = []
        if oracle is not None and oracle.attempts_per_ok is not None:
            slack = POOL_SLACK[row.scenario]
            out.append(_check("attempts/ok", row.attempts_per_ok, oracle.attempts_per_ok + slack, "%.3f"))
        out.append(_check("wall/oracle", row.ratio, POOL_WALL))
        return out
    if row.scenario == "overload":
        return [
            _all_ok(row),
            _check("overload share", row.overload_share, OVERLOAD_SHARE, "%.3f"),
            _check("wall/ideal", row.ratio, OVERLOAD_WALL),
        ]
    if row.scenario == "storm":
        return [_all_ok(row), _check("healthy slowdown", row.healthy_slowdown, HEALTHY_SLOWDOWN)]
    if row.scenario == "retry_after":
        # "100% ok" is not the issue's: it keeps a crawl that fetched nothing from passing on "early".
        return [_check("early", float(row.early), 0.0, "%.0f"), _all_ok(row)]
    return []
