"""The health report's page: one self-contained HTML file from a Sampler's timeline.

The data goes in as JSON (a `<script type="application/json">`), the charts are drawn by uPlot,
inlined from package data (report_assets/README.md says where it comes from), so the page opens
offline. The page script marks the body with the number of charts drawn (`data-rendered`) and any
script error (`data-errors`), for the browser test and for anyone wondering about a blank page.

Proxies are named by `Proxy.masked` only, and every text of the data passes the crawl's credential
mask besides: no password reaches the file.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from itertools import pairwise
from typing import Any

from scrapy_gateway.core.gateway import Gateway
from scrapy_gateway.core.health import State
from scrapy_gateway.core.timeline import Key, Sampler, Timeline, scope_label
from scrapy_gateway.masking import CredentialMask

TOP = 8  # proxies, slots or domains drawn individually per chart; the rest are "others"
MAX_TABLE_ROWS = 500  # the final proxy table (the log's stops at 200)


@dataclass(frozen=True, slots=True)
class Summary:
    """What the stats say about the crawl as a whole (the adapter reads them)."""

    title: str
    generated: str  # when, as text (UTC)
    figures: Sequence[tuple[str, float]]  # (label, value): pages, retries, ...
    blame: Mapping[str, float]  # failures by blame


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _cumulative(column: Sequence[float | None]) -> list[float]:
    """A counter's column with its gaps filled: 0 before it was first seen, else the last value."""
    filled, last = [], 0.0
    for value in column:
        if value is not None:
            last = value
        filled.append(last)
    return filled


def _rates(times: Sequence[float], column: Sequence[float]) -> list[float | None]:
    """Per second between neighbouring points (the first has no rate). A span shorter than the
    usual spacing (the crawl's last sample, taken at close) counts as the usual one: a few
    failures in its moment are not a storm."""
    spans = sorted(b - a for a, b in pairwise(times))
    usual = spans[len(spans) // 2] if spans else 0.0
    rates: list[float | None] = [None]
    for i in range(1, len(times)):
        span = max(times[i] - times[i - 1], usual)
        rates.append(_round((column[i] - column[i - 1]) / span) if span > 0 else None)
    return rates


class _Charts:
    def __init__(self, timeline: Timeline) -> None:
        self.timeline = timeline
        self.times = [round(t, 2) for t in timeline.times]
        self.charts: list[dict[str, Any]] = []

    def column(self, key: Key) -> list[float | None]:
        return self.timeline.series.get(key, [None] * len(self.times))

    def top(self, metric: str, weight: str | None = None) -> list[str]:
        """The labels of `metric` drawn individually: the largest by their peak of `weight` (for
        a counter, its last value)."""
        series = self.timeline.series

        def size(label: str) -> float:
            return max((v for v in series.get((weight or metric, label), ()) if v is not None), default=0.0)

        return sorted(self.timeline.labels(metric), key=lambda label: (-size(label), label))[:TOP]

    def add(self, group: str, title: str, unit: str, series: list[tuple[str, list[float | None]]], **opts: Any) -> None:
        if not series:
            series = [("none", [0.0] * len(self.times))]
        self.charts.append(
            {
                "group": group,
                "title": title,
                "unit": unit,
                "x": self.times,
                "series": [{"label": label, "values": values} for label, values in series],
                **opts,
            }
        )

    def rate_chart(self, group: str, title: str, metric: str, total: Key | None, names: Mapping[str, str]) -> None:
        """Per-second rates of a counter per label, the busiest few and the rest as "others"."""
        shown = self.top(metric)
        series, shown_sum = [], [0.0] * len(self.times)
        for label in shown:
            counts = _cumulative(self.column((metric, label)))
            shown_sum = [a + b for a, b in zip(shown_sum, counts, strict=True)]
            series.append((names.get(label, label), _rates(self.times, counts)))
        if total is not None:
            rest = [a - b for a, b in zip(_cumulative(self.column(total)), shown_sum, strict=True)]
            if any(rest):
                series.append(("others", _rates(self.times, rest)))
        self.add(group, title, "per second", series)

    def mean_chart(
        self, title: str, unit: str, metric: str, pool: str, shown: list[str], names: Mapping[str, str]
    ) -> None:
        """A gauge per proxy, and the mean of the rest of the pool (its sums less the shown)."""
        series = []
        for label in shown:
            series.append((names[label], [_round(v) for v in self.column((metric, label))]))
        totals, counts = self.column((f"pool_{pool}_sum", "")), self.column((f"pool_{pool}_n", ""))
        rest: list[float | None] = []
        for i in range(len(self.times)):
            total, count = totals[i], counts[i]
            for label in shown:
                value = self.column((metric, label))[i]
                if value is not None and total is not None and count is not None:
                    total, count = total - value, count - 1
            rest.append(_round(total / count) if total is not None and count and count >= 0.5 else None)
        if any(v is not None for v in rest):
            series.append(("others (mean)", rest))
        self.add("proxies", title, unit, series)


def _names(gateway: Gateway) -> dict[str, str]:
    return {record.proxy.key: record.proxy.masked for record in gateway.pool}


def _proxy_charts(charts: _Charts, gateway: Gateway) -> None:
    names = _names(gateway)
    shown = charts.top("requests", "requests")
    charts.mean_chart("Proxy health (1 - failure score; 0 while out of rotation)", "", "health", "health", shown, names)
    charts.mean_chart("Proxy latency (smoothed round trip)", "s", "latency", "latency", shown, names)
    charts.rate_chart("proxies", "Requests per proxy", "requests", ("pool_requests", ""), names)
    charts.rate_chart("proxies", "The proxy's own failures, per proxy", "failures", ("pool_failures", ""), names)
    charts.rate_chart("proxies", "The proxies' own failures, by kind", "failure_kind", None, {})
    states = [(state, charts.column(("pool_state", state))) for state in ("active", "ejected", "retired")]
    charts.add("proxies", "Proxies in rotation, out, retired", "proxies", states)


def _domain_charts(charts: _Charts) -> None:
    limits = [(slot, charts.column(("limit", slot))) for slot in charts.top("limit", "inflight")]
    charts.add("domains", "Concurrency limit per download slot", "requests", limits, step=True)
    inflight = [(slot, charts.column(("inflight", slot))) for slot in charts.top("inflight")]
    total = charts.column(("inflight_total", ""))
    # Peaks of different moments once merged: their difference is only a bound, never below 0.
    rest = [
        None if t is None else max(0.0, t - sum(v or 0.0 for v in values))
        for t, *values in zip(total, *(column for _, column in inflight), strict=True)
    ]
    if any(v for v in rest):
        inflight.append(("others", rest))
    charts.add("domains", "Requests in flight per download slot (peak)", "requests", inflight)
    charts.rate_chart("domains", "Handled failures per domain", "errors", ("errors_total", ""), {})
    gates = [(scope_label(scope), charts.column(("gate", scope))) for scope in charts.timeline.labels("gate")]
    charts.add("domains", "Outage gates (1: open, requests held)", "", gates[: 2 * TOP], step=True, fill=True)
    charts.rate_chart("domains", "Retries by blame", "retries", None, {})


def proxy_table(gateway: Gateway) -> tuple[list[str], list[list[Any]]]:
    """The close log's proxy table (report.py), as rows."""
    columns = ["proxy", "state", "health", "requests", "ok", "origin", "proxy failures"]
    rows: list[list[Any]] = []
    for record in sorted(gateway.pool, key=lambda r: r.proxy.key)[:MAX_TABLE_ROWS]:
        health = record.health
        state = "probation" if health.probation else health.state.value
        shown = round(1.0 - health.score, 2) if health.state is State.ACTIVE else "-"
        failures = ", ".join(f"{k}={n}" for k, n in sorted(record.failures.items())) or "-"
        rows.append(
            [record.proxy.masked, state, shown, record.requests, record.successes, record.origin_failures, failures]
        )
    return columns, rows


def page_data(sampler: Sampler, summary: Summary) -> dict[str, Any]:
    charts = _Charts(sampler.timeline)
    _proxy_charts(charts, sampler.gateway)
    _domain_charts(charts)
    failures = sampler.failures
    kinds = sorted(set(failures.retried) | set(failures.given_up))
    counted = [(failures.retried.get(pair, 0), failures.given_up.get(pair, 0), pair) for pair in kinds]
    counted.sort(key=lambda row: (-row[0] - row[1], row[2]))
    retries = [[kind, blame, retried, given_up] for retried, given_up, (kind, blame) in counted]
    columns, rows = proxy_table(sampler.gateway)
    return {
        "title": summary.title,
        "generated": summary.generated,
        "figures": [list(item) for item in summary.figures],
        "blame": dict(summary.blame),
        "resolution": sampler.timeline.stride,
        "charts": charts.charts,
        "retries": {"columns": ["kind", "blame", "retried", "not retried"], "rows": retries},
        "table": {"columns": columns, "rows": rows, "more": max(0, len(sampler.gateway.pool) - MAX_TABLE_ROWS)},
    }


def _asset(name: str) -> str:
    return resources.files("scrapy_gateway").joinpath("report_assets", name).read_text(encoding="utf-8")


def _script_safe(text: str) -> str:
    """Text that cannot end the <script> element it sits in."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _masked(value: Any, mask: CredentialMask) -> Any:
    """Every text value of the data through the mask; only those, so that a short password can
    never break the JSON, nor the library, by matching a piece of them."""
    if isinstance(value, str):
        return mask.text(value)
    if isinstance(value, list):
        return [_masked(item, mask) for item in value]
    if isinstance(value, dict):
        return {key: _masked(item, mask) for key, item in value.items()}  # keys are this module's
    return value


def render(sampler: Sampler, summary: Summary, mask: CredentialMask) -> str:
    data = json.dumps(_masked(page_data(sampler, summary), mask), separators=(",", ":"), allow_nan=False)
    page = _TEMPLATE.format(
        title=html.escape(mask.text(summary.title)),
        css=_asset("uPlot.min.css"),
        library=_script_safe(_asset("uPlot.iife.min.js")),
        data=_script_safe(data),
        script=_PAGE_SCRIPT,
    )
    return page


_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
h1 {{ font-size: 1.4em; }} h2 {{ font-size: 1.15em; margin-top: 1.6em; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 1em; }}
.chart {{ border: 1px solid #ddd; padding: .3em; }}
table {{ border-collapse: collapse; font-size: 13px; }}
td, th {{ border: 1px solid #ddd; padding: .2em .5em; text-align: left; }}
td.n {{ text-align: right; }}
.figures span {{ display: inline-block; margin-right: 1.5em; }} .figures b {{ font-size: 1.2em; }}
</style>
</head><body data-rendered="0" data-errors="">
<script>
window.onerror = function (message, source, line) {{
  var body = document.body;
  body.dataset.errors = (body.dataset.errors ? body.dataset.errors + " | " : "") + message + " (line " + line + ")";
}};
</script>
<h1 id="title"></h1>
<p id="generated"></p>
<div class="figures" id="figures"></div>
<h2>Proxies over time</h2><div class="grid" id="proxies"></div>
<h2>Domains over time</h2><div class="grid" id="domains"></div>
<h2>Retries by reason and blame</h2><div id="retries"></div>
<h2>Proxies at close</h2><div id="table"></div>
<script type="application/json" id="data">{data}</script>
<script>{library}</script>
<script>{script}</script>
</body></html>
"""

_PAGE_SCRIPT = r"""
(function () {
  var data = JSON.parse(document.getElementById("data").textContent);
  var colors = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                "#7f7f7f", "#bcbd22", "#17becf"];
  function text(id, value) { document.getElementById(id).textContent = value; }
  text("title", data.title);
  text("generated", "Generated " + data.generated + "; one point per " + data.resolution + " sample(s).");
  var figures = document.getElementById("figures");
  data.figures.forEach(function (item) {
    var span = document.createElement("span");
    var b = document.createElement("b");
    b.textContent = item[1];
    span.appendChild(b);
    span.appendChild(document.createTextNode(" " + item[0]));
    figures.appendChild(span);
  });
  Object.keys(data.blame).forEach(function (who) {
    var span = document.createElement("span");
    span.textContent = "failures blamed on " + who + ": " + data.blame[who];
    figures.appendChild(span);
  });
  var drawn = 0;
  data.charts.forEach(function (chart) {
    var box = document.createElement("div");
    box.className = "chart";
    document.getElementById(chart.group).appendChild(box);
    var series = [{ label: "seconds" }];
    chart.series.forEach(function (s, i) {
      var color = s.label === "others" || s.label === "others (mean)" ? "#999" : colors[i % colors.length];
      var spec = { label: s.label, stroke: color, width: 1.5, spanGaps: false };
      if (chart.step) { spec.paths = uPlot.paths.stepped({ align: 1 }); }
      if (chart.fill) { spec.fill = color + "33"; }
      series.push(spec);
    });
    var opts = {
      title: chart.title + (chart.unit ? " (" + chart.unit + ")" : ""),
      width: 560, height: 260, series: series,
      scales: { x: { time: false } },
      axes: [{ label: "seconds since start" }, {}],
      legend: { live: true }
    };
    var columns = [chart.x].concat(chart.series.map(function (s) { return s.values; }));
    new uPlot(opts, columns, box);
    drawn += 1;
  });
  function table(id, spec) {
    var t = document.createElement("table");
    var head = t.insertRow();
    spec.columns.forEach(function (c) {
      var th = document.createElement("th"); th.textContent = c; head.appendChild(th);
    });
    spec.rows.forEach(function (row) {
      var tr = t.insertRow();
      row.forEach(function (cell) {
        var td = tr.insertCell(); td.textContent = cell;
        if (typeof cell === "number") { td.className = "n"; }
      });
    });
    document.getElementById(id).appendChild(t);
    if (spec.more) {
      var p = document.createElement("p"); p.textContent = "... and " + spec.more + " more proxies";
      document.getElementById(id).appendChild(p);
    }
  }
  table("retries", data.retries);
  table("table", data.table);
  document.body.dataset.charts = data.charts.length;
  document.body.dataset.rendered = drawn;
})();
"""
