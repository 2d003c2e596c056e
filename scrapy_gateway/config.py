"""The only reader of scrapy-gateway's settings: names, defaults and validation in one table.

`GatewayConfig.from_settings` turns Scrapy settings into plain, checked values; a bad value raises
`ConfigError` naming the setting, before the crawl starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrapy_gateway.core.gateway import Policy
from scrapy_gateway.core.health import HealthRules
from scrapy_gateway.core.proxies import Proxy, ProxyListError, parse_proxies, split_proxy_text


class ConfigError(ValueError):
    """An invalid scrapy-gateway setting; the message starts with the setting's name."""


DEFAULT_HTTP_CODES = (500, 502, 503, 504, 520, 521, 522, 523, 524, 429, 408)


def _number(
    kind: type[int] | type[float], low: float, high: float = math.inf, *, low_open: bool = False
) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(f"expected a number, got {value!r}")
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"expected {'an integer' if kind is int else 'a number'}, got {value!r}") from None
        if kind is int and isinstance(value, float) and value != number:
            raise ValueError(f"expected an integer, got {value!r}")
        if math.isnan(number) or number > high or number < low or (low_open and number == low):
            bound = f"> {low}" if low_open else f">= {low}"
            raise ValueError(f"expected a number {bound}{'' if high == math.inf else f' and <= {high}'}, got {value!r}")
        return number

    return parse


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _codes(value: Any) -> tuple[int, ...]:
    items = value.split(",") if isinstance(value, str) else value
    try:
        codes = tuple(int(str(item).strip()) for item in items)
    except (TypeError, ValueError):
        raise ValueError(f"expected a list of HTTP status codes, got {value!r}") from None
    bad = [c for c in codes if not 100 <= c <= 599 or 200 <= c < 400]
    if bad:
        raise ValueError(f"{bad} are not error statuses (use 400-599)")
    return codes


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return str(value)

    return parse


def _optional_int(value: Any) -> int | None:
    return None if value is None else _number(int, 0)(value)


# name: (default, parser). The README's settings table is checked against this.
SETTINGS: Mapping[str, tuple[Any, Callable[[Any], Any]]] = {
    "GATEWAY_ENABLED": (True, _boolean),
    "GATEWAY_PROXIES": ([], lambda v: v),  # parsed with GATEWAY_PROXIES_FILE, below
    "GATEWAY_PROXIES_FILE": (None, lambda v: v if v is None else str(v)),
    "GATEWAY_HTTP_CODES": (list(DEFAULT_HTTP_CODES), _codes),
    "GATEWAY_MAX_RETRIES": (5, _number(int, 0, 100)),
    "GATEWAY_MAX_PROXY_RETRIES": (10, _number(int, 0, 1000)),
    "GATEWAY_BACKOFF_BASE": (1.0, _number(float, 0.0, low_open=True)),
    "GATEWAY_BACKOFF_MAX": (30.0, _number(float, 0.0)),
    "GATEWAY_RETRY_AFTER_MAX": (120.0, _number(float, 0.0)),
    "GATEWAY_RETRY_BUDGET_RATIO": (0.2, _number(float, 0.0, 10.0)),
    "GATEWAY_RETRY_BUDGET_MIN_PER_SECOND": (20.0, _number(float, 0.0)),
    "GATEWAY_RETRY_BUDGET_BURST": (10.0, _number(float, 1.0)),
    "GATEWAY_HEALTH_ALPHA": (0.3, _number(float, 0.0, 1.0, low_open=True)),
    "GATEWAY_EJECT_SCORE": (0.6, _number(float, 0.0, 1.0, low_open=True)),
    "GATEWAY_EJECT_STREAK": (3, _number(int, 1)),
    "GATEWAY_COOLDOWN_BASE": (10.0, _number(float, 0.0, low_open=True)),
    "GATEWAY_COOLDOWN_MAX": (300.0, _number(float, 0.0, low_open=True)),
    "GATEWAY_RETIRE_AFTER": (6, _number(int, 0)),
    "GATEWAY_MAX_EJECTED_RATIO": (0.5, _number(float, 0.0, 1.0)),
    "GATEWAY_BLAME_WINDOW": (30.0, _number(float, 0.0, low_open=True)),
    "GATEWAY_CONCURRENCY_MIN": (1, _number(int, 1)),
    "GATEWAY_CONCURRENCY_BETA": (0.7, _number(float, 0.0, 1.0, low_open=True)),
    "GATEWAY_MAX_TRACKED_PAIRS": (100_000, _number(int, 1)),
    "GATEWAY_MAX_TRACKED_DOMAINS": (10_000, _number(int, 1)),
    "GATEWAY_WHEN_ALL_DOWN": ("wait", _choice("wait", "close")),
    "GATEWAY_LOG_INTERVAL": (60.0, _number(float, 0.0)),
    "GATEWAY_SEED": (None, _optional_int),
}


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    enabled: bool
    proxies: tuple[Proxy, ...]
    http_codes: frozenset[int]
    max_retries: int
    max_proxy_retries: int
    retry_after_max: float
    when_all_down: str
    log_interval: float
    seed: int | None
    policy: Policy

    @classmethod
    def from_settings(cls, settings: Any) -> GatewayConfig:
        """`settings`: Scrapy's Settings, or any mapping with `.get(name, default)`."""
        v: dict[str, Any] = {}
        for name, (default, parse) in SETTINGS.items():
            raw = settings.get(name, default)
            try:
                v[name] = parse(default if raw is None and default is not None else raw)
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
        if v["GATEWAY_BACKOFF_MAX"] < v["GATEWAY_BACKOFF_BASE"]:
            raise ConfigError("GATEWAY_BACKOFF_MAX: must not be below GATEWAY_BACKOFF_BASE")
        if v["GATEWAY_COOLDOWN_MAX"] < v["GATEWAY_COOLDOWN_BASE"]:
            raise ConfigError("GATEWAY_COOLDOWN_MAX: must not be below GATEWAY_COOLDOWN_BASE")
        policy = Policy(
            backoff_base=v["GATEWAY_BACKOFF_BASE"],
            backoff_cap=v["GATEWAY_BACKOFF_MAX"],
            health=HealthRules(
                alpha=v["GATEWAY_HEALTH_ALPHA"],
                eject_score=v["GATEWAY_EJECT_SCORE"],
                eject_streak=v["GATEWAY_EJECT_STREAK"],
                cooldown_base=v["GATEWAY_COOLDOWN_BASE"],
                cooldown_cap=v["GATEWAY_COOLDOWN_MAX"],
                retire_after=v["GATEWAY_RETIRE_AFTER"],
            ),
            max_ejected_ratio=v["GATEWAY_MAX_EJECTED_RATIO"],
            blame_window=v["GATEWAY_BLAME_WINDOW"],
            budget_ratio=v["GATEWAY_RETRY_BUDGET_RATIO"],
            budget_min_per_second=v["GATEWAY_RETRY_BUDGET_MIN_PER_SECOND"],
            budget_burst=v["GATEWAY_RETRY_BUDGET_BURST"],
            concurrency_min=v["GATEWAY_CONCURRENCY_MIN"],
            concurrency_beta=v["GATEWAY_CONCURRENCY_BETA"],
            max_pairs=v["GATEWAY_MAX_TRACKED_PAIRS"],
            max_domains=v["GATEWAY_MAX_TRACKED_DOMAINS"],
        )
        return cls(
            enabled=v["GATEWAY_ENABLED"],
            proxies=tuple(_read_proxies(v["GATEWAY_PROXIES"], v["GATEWAY_PROXIES_FILE"])),
            http_codes=frozenset(v["GATEWAY_HTTP_CODES"]),
            max_retries=v["GATEWAY_MAX_RETRIES"],
            max_proxy_retries=v["GATEWAY_MAX_PROXY_RETRIES"],
            retry_after_max=v["GATEWAY_RETRY_AFTER_MAX"],
            when_all_down=v["GATEWAY_WHEN_ALL_DOWN"],
            log_interval=v["GATEWAY_LOG_INTERVAL"],
            seed=v["GATEWAY_SEED"],
            policy=policy,
        )


def _read_proxies(value: Any, path: str | None) -> list[Proxy]:
    if isinstance(value, str):
        entries = split_proxy_text(value)
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError("GATEWAY_PROXIES: every entry must be a string such as 'http://host:port'")
        entries = [item.strip() for item in value if item.strip()]
    else:
        raise ConfigError(f"GATEWAY_PROXIES: expected a list of proxy URLs or a string, got {type(value).__name__}")
    try:
        proxies = parse_proxies(entries, source="GATEWAY_PROXIES")
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"GATEWAY_PROXIES_FILE: cannot read {path!r}: {exc.__class__.__name__}") from None
            proxies += parse_proxies(split_proxy_text(text), source=f"GATEWAY_PROXIES_FILE {path!r}")
    except ProxyListError as exc:
        raise ConfigError(str(exc)) from None
    unique = {p.key: p for p in reversed(proxies)}
    return list(reversed(unique.values()))
