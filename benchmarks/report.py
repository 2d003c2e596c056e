"""Render the crawl table (text for the terminal, Markdown for results/) and write the results."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

from benchmarks.measure import Row

RESULTS = Path(__file__).resolve().parent / "results"

HEADER = (
    "scenario", "contender", "retries", "ok", "failed", "unfin", "att/ok", "wall s", "ratio",
    "healthy", "overload", "goodput", "early", "targets", "per origin: ok/pages @ last outcome",
)  # fmt: skip


def _num(value: float | None, fmt: str) -> str:
    return "-" if value is None else fmt % value


def _wall(row: Row) -> str:
    return f"{row.wall:.2f}" + (f" ({row.walls[0]:.1f}-{row.walls[-1]:.1f})" if len(row.walls) > 1 else "")


def _targets(row: Row) -> str:
    missed = [t.split(":")[0] for t in row.targets if ": MISS" in t]
    return "-" if not row.targets else ("met" if not missed else "MISS " + ", ".join(missed))


def cells(row: Row) -> list[str]:
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x {row.ratio_base}"
    healthy = "-"
    if row.healthy_slowdown is not None:
        healthy = f"{row.healthy_slowdown:.2f}x ({row.origin_wall.get('healthy', 0):.1f}/{row.healthy_alone:.1f}s)"
    overload = "-"
    if row.scenario == "overload":
        overload = f"{row.overload} ({100 * (row.overload_share or 0):.1f}%)"
    return [
        row.scenario,
        row.contender,
        row.retries,
        str(row.ok),
        str(row.failed),
        str(row.unfinished),
        _num(row.attempts_per_ok, "%.3f"),
        _wall(row),
        ratio,
        healthy,
        overload,
        "-" if row.goodput is None else f"{100 * row.goodput:.0f}%",
        str(row.early) if row.scenario == "retry_after" else "-",
        _targets(row),
        "; ".join(f"{o} {v[0]}/{sum(v)} @{row.origin_wall[o]:.1f}s" for o, v in row.by_origin.items()),
    ]


def text_table(rows: list[Row]) -> str:
    table = [list(HEADER), *(cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(cells(r)) + " |" for r in rows]
    return "\n".join(lines)


def sources_digest() -> str:
    """A digest of scrapy_gateway's sources: what a run measured, whatever the commit."""
    digest = hashlib.sha256()
    for path in sorted((RESULTS.parent.parent / "scrapy_gateway").rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def plugin_version() -> str:
    """The commit under test, and a digest of scrapy_gateway's sources (they may differ from it)."""
    root = RESULTS.parent.parent
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
    except OSError:
        commit = "?"
    return f"{commit or '?'} (sources {sources_digest()})"


def machine() -> dict[str, Any]:
    return {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "plugin": plugin_version(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def write(kind: str, payload: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """results/<kind>-<stamp>.json and .md, plus <kind>-latest.* copies."""
    RESULTS.mkdir(exist_ok=True)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    info = machine()
    head = (
        f"# {kind} benchmark\n\n{info['date']}, {info['cpu_count']} cores, Python {info['python']}, "
        f"scrapy-gateway {info['plugin']}\n\n"
    )
    body = json.dumps({**info, **payload}, indent=1, default=str)
    paths = RESULTS / f"{kind}-{stamp}.json", RESULTS / f"{kind}-{stamp}.md"
    for name in (f"{kind}-{stamp}", f"{kind}-latest"):
        (RESULTS / f"{name}.json").write_text(body)
        (RESULTS / f"{name}.md").write_text(head + markdown + "\n")
    return paths


# -- the sweep's table ---------------------------------------------------------------------------

SWEEP_HEADER = (
    "scenario", "params", "contender", "retries", "ok/pages", "att/ok", "wall s", "ratio", "measures", "targets",
)  # fmt: skip


def _measures(row: Row) -> str:
    m, parts = row.measures, []
    if "goodput" in m:
        parts.append(f"past-C 502s {row.overload} ({100 * (m['overload_share'] or 0):.1f}%)")
        parts.append(f"goodput {_num(m['goodput'] and 100 * m['goodput'], '%.0f')}%")
        if m.get("goodput_told") is not None and row.contender != "oracle":
            parts.append(f"{100 * m['goodput_told']:.0f}% of the told oracle's")
        if row.contender == "gateway":
            lowest = m["min_limit"]
            parts.append("no cut" if lowest is None else f"min limit {lowest} ({m['cuts']} cuts)")
            if m.get("held_back"):
                parts.append(f"slow start held back {m['held_back']} times")
    if row.healthy_slowdown is not None:
        parts.append(f"healthy {row.healthy_slowdown:.2f}x")
    if "after_end" in m and not m["all_ok"]:
        parts.append("pages of the outage lost or unfinished")
    elif "after_end" in m:
        parts.append(f"done {m['after_end']:+.1f}s after end (allowed +{m['after_allowed']:.1f})")
    if "outage_answers" in m:
        parts.append(f"outage 502s {m['outage_answers']}")
    if "early" in m:
        parts.append(f"early {m['early']}")
    if row.max_in_flight:
        parts.append(f"peak {row.max_in_flight} in flight")
    if row.close_reason not in ("finished", "computed"):
        parts.append(f"closed: {row.close_reason}")
    return "; ".join(parts) or "-"


def sweep_cells(row: Row) -> list[str]:
    return [
        row.scenario,
        row.params,
        row.contender,
        row.retries,
        f"{row.ok}/{row.pages}",
        _num(row.attempts_per_ok, "%.3f"),
        _wall(row),
        "-" if row.ratio is None else f"{row.ratio:.2f}x {row.ratio_base}",
        _measures(row),
        _targets(row),
    ]


def sweep_markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(SWEEP_HEADER) + " |", "|" + "---|" * len(SWEEP_HEADER)]
    lines += ["| " + " | ".join(sweep_cells(r)) + " |" for r in rows]
    return "\n".join(lines)
