"""Credentials stay where they belong; settings are checked at start-up; add-on == manual set-up."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from demo_world import OriginSpec, ProxySpec, World
from scrapy.crawler import Crawler
from scrapy.settings import Settings
from scrapy.utils.misc import load_object
from scrapy.utils.test import get_crawler

from scrapy_gateway.config import SETTINGS, ConfigError, GatewayConfig
from scrapy_gateway.masking import masked_url
from tests.conftest import ROOT, gateway_settings, run_crawl

SECRET_A, SECRET_B = "s3cretAAA", "s3cretBBB"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https-connect"])
def test_credentials_never_leak(world: World, tls: bool) -> None:
    origin = world.add_origin("a", OriginSpec(tls=tls))
    a = world.add_proxy("a", ProxySpec(credentials=("alice", SECRET_A)))
    b = world.add_proxy("b", ProxySpec(credentials=("bob", SECRET_B)))
    world.add_proxy("bad", ProxySpec(mode="bad_gateway", credentials=("carol", "s3cretCCC")))
    world.add_proxy("dead", ProxySpec(mode="dead"))
    world.start()
    urls = [origin.url(f"/p/{i}") for i in range(40)]
    result = run_crawl(gateway_settings([a.url, b.url, *(p.url for p in list(world.proxies.values())[2:])]), urls)
    assert len(result.by_kind("callback")) == 40
    text = result.log + repr(result.stats)
    for secret in (SECRET_A, SECRET_B, "s3cretCCC"):
        assert secret not in text
    snap = world.snapshot()
    assert snap["origins"]["a"]["proxy_authorization_seen"] == 0
    # Rotation never carried one proxy's credentials to another.
    assert snap["proxies"]["a"]["authorization_values_seen"] == [a.authorization]
    assert snap["proxies"]["b"]["authorization_values_seen"] == [b.authorization]
    assert "alice:***@" in result.log or "http://alice@" in result.log


def _gateway_error(**settings: object) -> str:
    with pytest.raises(ConfigError) as info:
        GatewayConfig.from_settings(Settings(settings))
    return str(info.value)


def test_bad_settings_are_named() -> None:
    assert _gateway_error(GATEWAY_BACKOFF_BASE="soon").startswith("GATEWAY_BACKOFF_BASE:")
    assert _gateway_error(GATEWAY_MAX_RETRIES=-1).startswith("GATEWAY_MAX_RETRIES:")
    assert _gateway_error(GATEWAY_HTTP_CODES=[502, 200]).startswith("GATEWAY_HTTP_CODES:")
    assert _gateway_error(GATEWAY_WHEN_ALL_DOWN="panic").startswith("GATEWAY_WHEN_ALL_DOWN:")
    assert _gateway_error(GATEWAY_BACKOFF_BASE=5, GATEWAY_BACKOFF_MAX=1).startswith("GATEWAY_BACKOFF_MAX:")
    message = _gateway_error(GATEWAY_PROXIES=["http://u:hunter2@h:1", "socks5://u:hunter2@h:2"])
    assert message.startswith("GATEWAY_PROXIES, entry 2:") and "hunter2" not in message
    assert _gateway_error(GATEWAY_STATE="127.0.0.1:6379").startswith("GATEWAY_STATE: expected 'memory' or a Redis URL")
    assert _gateway_error(GATEWAY_STATE_PREFIX="my fleet").startswith("GATEWAY_STATE_PREFIX:")
    message = _gateway_error(GATEWAY_STATE="redis://:hunter2@h:notaport/0")
    assert message.startswith("GATEWAY_STATE: not a Redis URL") and "hunter2" not in message, message
    assert "hunter2" not in _gateway_error(GATEWAY_STATE="redis:/:hunter2@h")
    assert _gateway_error(GATEWAY_LEASE_TTL=0).startswith("GATEWAY_LEASE_TTL:")
    config = GatewayConfig.from_settings(Settings({"GATEWAY_STATE": "redis://:pw@127.0.0.1:6379/2"}))
    assert config.state == "redis://:pw@127.0.0.1:6379/2"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw1@127.0.0.1:6379/2", "redis://:***@127.0.0.1:6379/2"),
        ("redis://user:pw1@[::1]:6379/0", "redis://user:***@[::1]:6379/0"),
        ("rediss://user@h:2/0", "rediss://user@h:2/0"),
        ("unix:///run/redis.sock?db=1&password=pw1", "unix:///run/redis.sock?db=1&password=***"),
        ("redis://h:1/0", "redis://h:1/0"),
    ],
)
def test_the_redis_password_is_never_shown(url: str, shown: str) -> None:
    assert masked_url(url) == shown


def test_proxies_file_errors_name_the_entry(tmp_path: Path) -> None:
    listing = tmp_path / "proxies.txt"
    listing.write_text("# pool\nhttp://u:p@10.0.0.1:8080\n\nhttp://10.0.0.2:notaport\n")
    message = _gateway_error(GATEWAY_PROXIES_FILE=str(listing))
    assert message.startswith("GATEWAY_PROXIES_FILE") and "entry 2" in message
    assert _gateway_error(GATEWAY_PROXIES_FILE=str(tmp_path / "missing.txt")).startswith("GATEWAY_PROXIES_FILE:")


def test_a_bad_setting_stops_the_crawl_at_start_up(world: World) -> None:
    origin = world.add_origin("a")
    world.start()
    result = run_crawl(gateway_settings([], GATEWAY_BACKOFF_MAX="never"), [origin.url("/")])
    assert "GATEWAY_BACKOFF_MAX: expected a number" in result.log
    assert world.snapshot()["origins"]["a"]["requests"] == 0


def _final_settings(settings: dict[str, object]) -> Crawler:
    crawler = get_crawler(settings_dict=settings)
    crawler._apply_settings()  # what Crawler.crawl() does before building components
    return crawler


def test_addon_and_manual_setup_end_in_the_same_settings() -> None:
    by_addon = _final_settings({"ADDONS": {"scrapy_gateway.Addon": 0}}).settings
    manual = _final_settings(
        {
            "DOWNLOADER_MIDDLEWARES": {"scrapy_gateway.GatewayMiddleware": 595},
            "DOWNLOADER": "scrapy_gateway.GatewayDownloader",
        }
    ).settings
    for name in ("DOWNLOADER", "RETRY_HTTP_CODES", "RETRY_ENABLED"):
        assert by_addon[name] == manual[name], name
    assert _loaded(by_addon.getdict("DOWNLOADER_MIDDLEWARES")) == _loaded(manual.getdict("DOWNLOADER_MIDDLEWARES"))


def _loaded(components: dict[object, object]) -> dict[object, object]:
    return {load_object(k) if isinstance(k, str) else k: v for k, v in components.items()}


def test_readme_lists_every_setting_with_its_true_default() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = dict(re.findall(r"^\| `(GATEWAY_[A-Z_]+)` \| `([^`]*)` \|", readme, flags=re.M))
    assert set(rows) == set(SETTINGS), set(rows) ^ set(SETTINGS)
    for name, (default, _) in SETTINGS.items():
        assert rows[name] == repr(default), (name, rows[name], default)
