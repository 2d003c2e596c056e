"""The health report (health_report.py, report_page.py): its size, its masking, its setting, its writes."""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from scrapy_gateway.config import ConfigError, GatewayConfig
from scrapy_gateway.core.faults import Blame, Fault
from scrapy_gateway.core.gateway import Gateway, Policy
from scrapy_gateway.core.proxies import parse_proxy
from scrapy_gateway.core.timeline import Sampler, SlotView
from scrapy_gateway.masking import CredentialMask
from scrapy_gateway.report_page import TOP, Summary, render
from tests.adapters.conftest import Rig

PROXY = parse_proxy("http://alice:s3cret@10.0.0.1:3128")
PROXY_FAULTS = (
    Fault("proxy_refused", Blame.PROXY, hard=True),
    Fault("timeout", Blame.PROXY, answered=False),
    Fault("http_502", Blame.PAIR),
)
SUMMARY = Summary("scrapy-gateway health report: test", "2026-01-01 00:00:00 UTC", [("pages", 1)], {"proxy": 1})


def page_data(page: str) -> dict:
    found = re.search(r'<script type="application/json" id="data">(.*?)</script>', page, flags=re.S)
    assert found is not None
    return json.loads(found.group(1).replace("<\\/", "</"))


def synthetic_crawl(requests: int, proxies: int, domains: int) -> tuple[Sampler, list[str]]:
    """A crawl fed straight to the core on a fake clock: 20 requests a second, one sample a
    second, some proxies failing, an outage gate on one domain a while."""
    pool_proxies = [parse_proxy(f"http://user{i}:pw-{i}-secret@10.1.{i // 250}.{i % 250}:8080") for i in range(proxies)]
    gateway = Gateway(pool_proxies, Policy())
    sampler = Sampler(gateway)
    rng = random.Random(7)
    names = [f"site{d}.example" for d in range(domains)]
    inflight = dict.fromkeys(names, 0)
    now = 0.0
    for n in range(requests):
        now = n / 20.0
        proxy = pool_proxies[int(rng.random() ** 2 * proxies)].key  # a few carry most
        domain = names[n % domains]
        gateway.pool.started(proxy, domain, now)
        draw = rng.random()
        if draw < 0.85:
            gateway.pool.succeeded(proxy, domain, now + 0.2, latency=rng.uniform(0.05, 0.8))
        elif draw < 0.95:
            fault = PROXY_FAULTS[n % 3]
            gateway.pool.failed(proxy, domain, fault, now + 0.2, rng)
            sampler.failure(domain, fault.kind, fault.blame.value, retried=True)
        else:
            gateway.pool.failed(proxy, domain, Fault("http_503", Blame.ORIGIN), now + 0.2, rng)
            sampler.failure(domain, "http_503", "origin", retried=draw < 0.99)
        inflight[domain] = n % 7
        if n % 20 == 0:
            if n == 2000:
                for i in range(5):
                    gateway.gates.failure(names[0], f"p{i}", now + i, rng, paths_needed=1)
            if n == 3000:
                gateway.gates.success((names[0],), now)
            sampler.sample(now, {d: SlotView(limit=8, inflight=k) for d, k in inflight.items()})
    sampler.finish(now + 1.0, {})
    return sampler, [p.password for p in pool_proxies]


def test_a_10000_request_crawl_through_100_proxies_makes_a_small_page_without_credentials(tmp_path: Path) -> None:
    sampler, passwords = synthetic_crawl(10_000, 100, 30)
    mask = CredentialMask.from_proxies(sampler.gateway.pool.records[k].proxy for k in sampler.gateway.pool.records)
    page = render(sampler, SUMMARY, mask)
    size = len(page.encode())
    (tmp_path / "report.html").write_text(page)
    print(f"10,000 requests, 100 proxies: {size} bytes")
    assert size < 1_000_000, size
    assert not any(password in page for password in passwords)
    assert "user0:***@" in page  # named as Proxy.masked names them
    assert not re.search(r"""(src|href)\s*=\s*["']?https?:""", page, flags=re.I)  # nothing fetched
    data = page_data(page)
    assert len(data["charts"]) == 11
    for chart in data["charts"]:
        assert 0 < len(chart["series"]) <= TOP + 1, chart["title"]
        assert all(len(s["values"]) == len(chart["x"]) for s in chart["series"]), chart["title"]
        assert len(chart["x"]) <= sampler.timeline.max_points
    gates = next(c for c in data["charts"] if c["title"].startswith("Outage gates"))
    assert [s["label"] for s in gates["series"]] == ["site0.example"]
    assert max(v or 0 for v in gates["series"][0]["values"]) == 1
    assert len(data["table"]["rows"]) == 100
    kinds = {(row[0], row[1]) for row in data["retries"]["rows"]}
    assert ("http_503", "origin") in kinds and ("proxy_refused", "proxy") in kinds


def test_the_others_line_is_the_rest_of_the_pool() -> None:
    sampler, _ = synthetic_crawl(2000, 20, 3)
    data = page_data(render(sampler, SUMMARY, CredentialMask()))
    requests = next(c for c in data["charts"] if c["title"] == "Requests per proxy")
    assert [s["label"] for s in requests["series"]][-1] == "others"
    # Every attempt went through one of the proxies: the rates add up to 20 a second.
    middle = len(requests["x"]) // 2
    total = sum(s["values"][middle] for s in requests["series"])
    assert total == pytest.approx(20.0, rel=0.05)


def test_the_report_file_setting_is_checked_at_start_up(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^GATEWAY_REPORT_FILE: the folder of .* does not exist"):
        GatewayConfig.from_settings({"GATEWAY_REPORT_FILE": str(tmp_path / "missing" / "report.html")})
    with pytest.raises(ConfigError, match=r"^GATEWAY_REPORT_FILE: expected a file name"):
        GatewayConfig.from_settings({"GATEWAY_REPORT_FILE": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"^GATEWAY_REPORT_INTERVAL"):
        GatewayConfig.from_settings({"GATEWAY_REPORT_INTERVAL": 0})
    assert GatewayConfig.from_settings({"GATEWAY_REPORT_FILE": ""}).report_file is None


def test_the_close_writes_the_page_and_replaces_an_old_one(rig: Callable[..., Rig], tmp_path: Path) -> None:
    path = tmp_path / "report.html"
    path.write_text("an older crawl's report")
    r = rig(GATEWAY_PROXIES=[PROXY.url], GATEWAY_REPORT_FILE=str(path))
    report = r.runtime.health_report
    assert report is not None
    report.sample()
    r.clock.advance(1.0)
    r.runtime._closed()
    page = path.read_text()
    assert page.startswith("<!DOCTYPE html>") and "s3cret" not in page and "alice:***@10.0.0.1:3128" in page
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temporary file left behind


def test_a_report_that_cannot_be_written_is_an_error_in_the_log_not_a_failed_close(
    rig: Callable[..., Rig], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "reports"
    folder.mkdir()
    r = rig(GATEWAY_PROXIES=[PROXY.url], GATEWAY_REPORT_FILE=str(folder / "report.html"))
    folder.rmdir()  # gone between the start-up check and the close
    with caplog.at_level(logging.ERROR, logger="scrapy_gateway"):
        r.runtime._closed()
    assert "could not write the health report" in caplog.text and "FileNotFoundError" in caplog.text


def test_no_setting_no_report(rig: Callable[..., Rig]) -> None:
    assert rig(GATEWAY_PROXIES=[PROXY.url]).runtime.health_report is None
