"""No proxy left, close and resume: every request ends exactly once, and nothing goes direct."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from demo_world import OriginSpec, ProxySpec, World

from scrapy_gateway.core.proxies import parse_proxy
from tests.conftest import ROOT, gateway_settings, run_crawl
from tests.harness.waits import wait_until


def test_all_proxies_retired_closes_the_crawl_and_never_goes_direct(world: World) -> None:
    origin = world.add_origin("a")
    for i in range(3):
        world.add_proxy(f"auth{i}", ProxySpec(credentials=("user", "right")))
    world.start()
    wrong = [p.url.replace(":right@", ":wrong@") for p in world.proxies.values()]
    assert all(":wrong@" in url for url in wrong)
    urls = [origin.url(f"/p/{i}") for i in range(20)]
    result = run_crawl(gateway_settings(wrong), urls)
    assert result.close_reason == "gateway_no_proxies"
    assert result.stat("gateway/retirements") == 3
    assert world.snapshot()["origins"]["a"]["requests"] == 0  # never the host's own address
    assert not result.by_kind("callback")
    assert "wrong" not in result.log


def test_all_proxies_cooling_down_waits_instead_of_spinning(world: World) -> None:
    origin = world.add_origin("a")
    proxy = world.add_proxy("only", ProxySpec(mode="dead"))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(5)]
    settings = gateway_settings(
        [proxy.url], GATEWAY_COOLDOWN_BASE=0.5, GATEWAY_COOLDOWN_MAX=0.5, GATEWAY_RETIRE_AFTER=3
    )
    result = run_crawl(settings, urls)
    result.assert_each_request_ended_once(5)
    # The whole pool refusing is a provider-wide outage: no retirement for it, but a gate that
    # holds the requests and probes until GATEWAY_OUTAGE_STALL (5 s in tests), then one last try
    # each, whose refusal reaches the errbacks.
    assert result.close_reason == "finished"
    assert result.stat("gateway/retirements") == 0
    assert result.stat("gateway/gates/opened") >= 1 and result.stat("gateway/gates/stalled") >= 1
    assert {o["error"] for o in result.by_kind("errback")} <= {
        "DownloadConnectionRefusedError",
        "ConnectionRefusedError",
    }
    assert len(result.by_kind("errback")) == 5
    # Waited out outside the downloader: probes and last tries, no spin.
    assert world.snapshot()["proxies"]["only"]["requests"] == 0  # dead port: nothing accepted
    assert result.stat("gateway/failures/proxy_refused") <= 40
    assert result.cpu < 3.0, result.cpu


def test_waiting_retries_end_in_errback_when_the_crawl_closes(world: World) -> None:
    origin = world.add_origin("slow", OriginSpec(retry_after=30.0))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(6)]
    result = run_crawl(gateway_settings([], CLOSESPIDER_TIMEOUT=2), urls)
    result.assert_each_request_ended_once(6)
    assert {o["error"] for o in result.by_kind("errback")} == {"RetryCancelled"}
    assert result.stat("gateway/waiting/cancelled") == 6


def _crawl_until_interrupted(
    spec: dict[str, object], folder: Path, when: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, object]:
    """Run a crawl, send it SIGINT as soon as `when(stats)` holds, and return its output."""
    spec_path, out_path, progress_path = folder / "in.json", folder / "out.json", folder / "progress.json"
    log_path = folder / "crawl.log"  # a file, not a pipe: nobody reads it while the crawl runs
    spec_path.write_text(json.dumps({**spec, "progress": str(progress_path)}))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "harness" / "run_crawl.py"), str(spec_path), str(out_path)],
            env=env,
            stderr=log_file,
        )

    def ready() -> bool:
        assert process.poll() is None, f"the crawl ended before {what}"
        return progress_path.exists() and when(json.loads(progress_path.read_text())["stats"])

    try:
        wait_until(ready, what)
    except AssertionError as failure:
        process.kill()
        process.wait(timeout=60)
        raise AssertionError(f"{failure}\n{log_path.read_text()[-4000:]}") from None
    process.send_signal(signal.SIGINT)  # as Ctrl-C would: a graceful shutdown
    process.wait(timeout=60)
    data: dict[str, object] = json.loads(out_path.read_text())
    data["log"] = log_path.read_text()
    return data


def test_stop_and_resume_with_jobdir_loses_no_waiting_retry(world: World, tmp_path: Path) -> None:
    origin = world.add_origin("ra", OriginSpec(retry_after=3.0))
    good = world.add_proxy("good", ProxySpec())
    dead = world.add_proxy("dead", ProxySpec(mode="dead"))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(8)]
    settings = gateway_settings([good.url, dead.url], JOBDIR=str(tmp_path / "job"), GATEWAY_COOLDOWN_BASE=120)
    first = _crawl_until_interrupted(
        {"settings": settings, "urls": urls, "dont_filter": False},
        tmp_path,
        lambda stats: stats.get("gateway/waiting/max", 0) >= 8,  # every page got its 503, all 8 wait
        "all 8 retries are waiting",
    )
    assert first["close_reason"] == "shutdown"
    first_stats: dict[str, int] = first["stats"]  # type: ignore[assignment]
    assert first_stats.get("gateway/waiting/persisted") == 8
    assert first_stats.get("gateway/ejections/proxy_refused") == 1
    assert not first["outcomes"]
    saved = json.loads((tmp_path / "job" / "gateway-state.json").read_text())
    assert saved["proxies"][parse_proxy(dead.url).key]["state"] == "ejected"

    second = run_crawl(settings, urls, dont_filter=False)
    assert sorted(o["n"] for o in second.outcomes) == list(range(8))
    assert len(second.by_kind("callback")) == 8
    assert world.snapshot()["origins"]["ra"]["early"] == 0
    # What was learned before the stop holds after it: the dead proxy is still out.
    assert "restored the health of 2 proxies" in second.log
    assert second.stat("gateway/failures/proxy_refused") == 0
