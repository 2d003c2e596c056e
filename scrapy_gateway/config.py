"""The only reader of scrapy-gateway's settings: names, defaults and validation in one table.

`GatewayConfig.from_settings` turns Scrapy settings into plain, checked values; a bad value raises
`ConfigError` naming the setting, before the crawl starts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scrapy_gateway.core.gates import GateRules
from scrapy_gateway.core.gateway import Policy
from scrapy_gateway.core.health import HealthRules
from scrapy_gateway.core.latency import TimeoutRule
from scrapy_gateway.core.proxies import Proxy, ProxyListError, parse_proxies, split_proxy_text
from scrapy_gateway.handlers import TransportRule, rule
from scrapy_gateway.masking import masked_url


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


def _optional_boolean(value: Any) -> bool | None:
    return None if value is None else _boolean(value)


def _optional_int(value: Any) -> int | None:
    return None if value is None else _number(int, 0)(value)


def _transport_rules(value: Any) -> tuple[TransportRule, ...]:
    """[["package.module.Class", "timeout"], ["package.Err", "tunnel", "said (?P<status>\\d{3})"], ...]"""
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"expected a list of [exception path, kind] or [exception path, kind, pattern], got {value!r}")
    rules = []
    for number, entry in enumerate(value, start=1):
        if not isinstance(entry, (list, tuple)) or len(entry) not in (2, 3):
            raise ValueError(f"entry {number}: expected [exception path, kind] or [..., pattern], got {entry!r}")
        try:
            rules.append(rule(*entry))
        except (ValueError, TypeError, re.error) as exc:
            raise ValueError(f"entry {number}: {exc}") from None
    return tuple(rules)


def _state(value: Any) -> str:
    """ "memory" (this process alone) or a Redis URL (a fleet of processes sharing state)."""
    text = str(value).strip()
    if text == "memory":
        return text
    shown = masked_url(text)
    scheme = text.split("://", 1)[0] if "://" in text else ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ValueError(f"expected 'memory' or a Redis URL (redis://host:port/db, rediss://, unix://), got {shown!r}")
    try:
        from redis.connection import parse_url  # optional: runtime.py names it when missing
    except ImportError:
        return text
    try:
        parse_url(text)  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ValueError(f"not a Redis URL redis-py can read ({exc}): {shown!r}") from None
    return text


def _prefix(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() for c in text):
        raise ValueError(f"expected a non-empty key prefix without spaces, got {value!r}")
    return text


def _report_file(value: Any) -> str | None:
    """A path for the health report (health_report.py); None or "" = no report. Its folder must
    exist at start-up: a crawl of hours must not learn at its close that it had nowhere to write."""
    if value is None or str(value).strip() == "":
        return None
    path = Path(str(value)).expanduser()
    if path.is_dir():
        raise ValueError(f"expected a file name, got the folder {str(value)!r}")
    if not path.parent.is_dir():
        raise ValueError(f"the folder of {str(value)!r} does not exist")
    return str(path)


def _optional_retries(value: Any) -> int | None:
    return None if value is None else _number(int, 0, 100)(value)


# The core's own defaults are the defaults: one owner, no second copy to drift.
_POLICY = Policy()
_HEALTH = _POLICY.health

# name: (default, parser). The README's settings table is checked against this.
SETTINGS: Mapping[str, tuple[Any, Callable[[Any], Any]]] = {
    "GATEWAY_ENABLED": (True, _boolean),
    "GATEWAY_PROXIES": ([], lambda v: v),  # parsed with GATEWAY_PROXIES_FILE, below
    "GATEWAY_PROXIES_FILE": (None, lambda v: v if v is None else str(v)),
    "GATEWAY_HTTP_CODES": (list(DEFAULT_HTTP_CODES), _codes),
    "GATEWAY_MAX_RETRIES": (None, _optional_retries),  # None: RETRY_TIMES if set, else 5
    "GATEWAY_MAX_PROXY_RETRIES": (10, _number(int, 0, 1000)),
    "GATEWAY_BACKOFF_BASE": (_POLICY.backoff_base, _number(float, 0.0, low_open=True)),
    "GATEWAY_BACKOFF_MAX": (_POLICY.backoff_cap, _number(float, 0.0)),
    "GATEWAY_RETRY_AFTER_MAX": (120.0, _number(float, 0.0)),
    "GATEWAY_RETRY_BUDGET_RATIO": (_POLICY.budget_ratio, _number(float, 0.0, 10.0)),
    "GATEWAY_RETRY_BUDGET_MIN_PER_SECOND": (_POLICY.budget_min_per_second, _number(float, 0.0)),
    "GATEWAY_RETRY_BUDGET_BURST": (_POLICY.budget_burst, _number(float, 1.0)),
    "GATEWAY_HEALTH_ALPHA": (_HEALTH.alpha, _number(float, 0.0, 1.0, low_open=True)),
    "GATEWAY_EJECT_SCORE": (_HEALTH.eject_score, _number(float, 0.0, 1.0, low_open=True)),
    "GATEWAY_EJECT_STREAK": (_HEALTH.eject_streak, _number(int, 1)),
    "GATEWAY_COOLDOWN_BASE": (_HEALTH.cooldown_base, _number(float, 0.0, low_open=True)),
    "GATEWAY_COOLDOWN_MAX": (_HEALTH.cooldown_cap, _number(float, 0.0, low_open=True)),
    "GATEWAY_COOLDOWN_RELAPSE": (_HEALTH.relapse, _number(float, 0.0, low_open=True)),
    "GATEWAY_RETIRE_AFTER": (_HEALTH.retire_after, _number(int, 0)),
    "GATEWAY_MAX_EJECTED_RATIO": (_POLICY.max_ejected_ratio, _number(float, 0.0, 1.0)),
    "GATEWAY_BLAME_WINDOW": (_POLICY.blame_window, _number(float, 0.0, low_open=True)),
    "GATEWAY_CONCURRENCY_MIN": (_POLICY.concurrency_min, _number(int, 1)),
    "GATEWAY_CONCURRENCY_BETA": (_POLICY.concurrency_beta, _number(float, 0.0, 1.0, low_open=True)),
    "GATEWAY_CONCURRENCY_START": (_POLICY.concurrency_start, _number(int, 0)),
    "GATEWAY_MAX_TRACKED_PAIRS": (_POLICY.max_pairs, _number(int, 1)),
    "GATEWAY_MAX_TRACKED_DOMAINS": (_POLICY.max_domains, _number(int, 1)),
    "GATEWAY_WHEN_ALL_DOWN": ("wait", _choice("wait", "close")),
    "GATEWAY_LOG_INTERVAL": (60.0, _number(float, 0.0)),
    "GATEWAY_SEED": (None, _optional_int),
    "GATEWAY_TRANSPORT_ERRORS": ([], _transport_rules),
    # Per-attempt timeouts (core/latency.py): a factor of 0 turns them off.
    "GATEWAY_ATTEMPT_TIMEOUT_FACTOR": (_POLICY.timeouts.factor, _number(float, 0.0, 100.0)),
    "GATEWAY_ATTEMPT_TIMEOUT_MIN": (_POLICY.timeouts.floor, _number(float, 0.0, low_open=True)),
    # Outage gates (core/gates.py): how long a gate may stay open before its requests end (0: never).
    "GATEWAY_OUTAGE_STALL": (_POLICY.gates.stall_after, _number(float, 0.0)),
    # A provider's rotating endpoint (a new exit per request): None = a pool of one is one.
    "GATEWAY_ROTATING_ENDPOINTS": (_POLICY.rotating_endpoints, _optional_boolean),
    # Fleet (fleet.py): "memory", or a Redis URL shared by every process of the fleet.
    "GATEWAY_STATE": ("memory", _state),
    "GATEWAY_STATE_PREFIX": ("scrapy-gateway", _prefix),  # one per fleet sharing a Redis
    "GATEWAY_LEASE_TTL": (10.0, _number(float, 1.0, 3600.0)),  # seconds a dead process holds its share
    # The health report (health_report.py): an HTML page written at close; None = none.
    "GATEWAY_REPORT_FILE": (None, _report_file),
    "GATEWAY_REPORT_INTERVAL": (1.0, _number(float, 0.0, low_open=True)),  # seconds between its samples
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
    transport_rules: tuple[TransportRule, ...]  # the user's, tried before the built-in table
    retries_off: bool  # RETRY_ENABLED off or RETRY_TIMES 0: no retry of any kind, meta limits included
    retry_note: str  # how the user's Scrapy retry settings shaped the limits, for the start-up log
    default_ceiling: int  # a slot's concurrency unless DOWNLOAD_SLOTS names its own
    slot_ceilings: Mapping[str, int]
    state: str = "memory"  # or a Redis URL (fleet.py)
    state_prefix: str = "scrapy-gateway"
    lease_ttl: float = 10.0
    report_file: str | None = None
    report_interval: float = 1.0

    def ceiling(self, slot: str) -> int:
        """The user's own concurrency limit of a download slot: the one the gateway never exceeds."""
        return self.slot_ceilings.get(slot, self.default_ceiling)

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
                relapse=v["GATEWAY_COOLDOWN_RELAPSE"],
            ),
            max_ejected_ratio=v["GATEWAY_MAX_EJECTED_RATIO"],
            blame_window=v["GATEWAY_BLAME_WINDOW"],
            budget_ratio=v["GATEWAY_RETRY_BUDGET_RATIO"],
            budget_min_per_second=v["GATEWAY_RETRY_BUDGET_MIN_PER_SECOND"],
            budget_burst=v["GATEWAY_RETRY_BUDGET_BURST"],
            concurrency_min=v["GATEWAY_CONCURRENCY_MIN"],
            concurrency_beta=v["GATEWAY_CONCURRENCY_BETA"],
            concurrency_start=v["GATEWAY_CONCURRENCY_START"],
            max_pairs=v["GATEWAY_MAX_TRACKED_PAIRS"],
            max_domains=v["GATEWAY_MAX_TRACKED_DOMAINS"],
            timeouts=TimeoutRule(factor=v["GATEWAY_ATTEMPT_TIMEOUT_FACTOR"], floor=v["GATEWAY_ATTEMPT_TIMEOUT_MIN"]),
            gates=GateRules(stall_after=v["GATEWAY_OUTAGE_STALL"]),
            rotating_endpoints=v["GATEWAY_ROTATING_ENDPOINTS"],
        )
        max_retries, max_proxy_retries, retry_note, retries_off = _retry_limits(
            settings, v["GATEWAY_MAX_RETRIES"], v["GATEWAY_MAX_PROXY_RETRIES"]
        )
        default_ceiling, slot_ceilings = _ceilings(settings)
        return cls(
            enabled=v["GATEWAY_ENABLED"],
            proxies=tuple(read_proxies(v["GATEWAY_PROXIES"], v["GATEWAY_PROXIES_FILE"])),
            http_codes=frozenset(v["GATEWAY_HTTP_CODES"]),
            max_retries=max_retries,
            max_proxy_retries=max_proxy_retries,
            retry_after_max=v["GATEWAY_RETRY_AFTER_MAX"],
            when_all_down=v["GATEWAY_WHEN_ALL_DOWN"],
            log_interval=v["GATEWAY_LOG_INTERVAL"],
            seed=v["GATEWAY_SEED"],
            policy=policy,
            transport_rules=v["GATEWAY_TRANSPORT_ERRORS"],
            retries_off=retries_off,
            retry_note=retry_note,
            default_ceiling=default_ceiling,
            slot_ceilings=slot_ceilings,
            state=v["GATEWAY_STATE"],
            state_prefix=v["GATEWAY_STATE_PREFIX"],
            lease_ttl=v["GATEWAY_LEASE_TTL"],
            report_file=v["GATEWAY_REPORT_FILE"],
            report_interval=v["GATEWAY_REPORT_INTERVAL"],
        )


DEFAULT_MAX_RETRIES = 5


def _user_set(settings: Any, name: str) -> bool:
    """Whether a Scrapy setting was given by the user rather than left at Scrapy's default."""
    getpriority = getattr(settings, "getpriority", None)
    if getpriority is None:  # a plain mapping (tests): present means given
        return name in settings
    priority = getpriority(name)
    return priority is not None and priority > 0  # 0 is the "default" priority


def _retry_limits(settings: Any, max_retries: int | None, max_proxy_retries: int) -> tuple[int, int, str, bool]:
    """The gateway's retry limits, honouring RETRY_ENABLED and RETRY_TIMES when the user set them.

    Zero retries means zero: with RETRY_ENABLED off or RETRY_TIMES = 0 (and no GATEWAY_MAX_RETRIES)
    the gateway retries nothing, not even on another proxy, as `dont_retry` does for one request.
    """
    try:
        enabled = _boolean(settings.get("RETRY_ENABLED", True))
        retry_times = _number(int, 0, 100)(settings.get("RETRY_TIMES", 2))
    except ValueError as exc:
        raise ConfigError(f"RETRY_ENABLED/RETRY_TIMES: {exc}") from None
    if not enabled:
        return 0, 0, "RETRY_ENABLED is off: the gateway retries nothing", True
    if max_retries is not None:
        return (
            max_retries,
            max_proxy_retries,
            f"GATEWAY_MAX_RETRIES = {max_retries}: origin-side retries per request",
            False,
        )
    if _user_set(settings, "RETRY_TIMES"):
        if retry_times == 0:
            return 0, 0, "RETRY_TIMES = 0: the gateway retries nothing", True
        return (
            retry_times,
            max_proxy_retries,
            f"RETRY_TIMES = {retry_times}: origin-side retries per request, with backoff",
            False,
        )
    return (
        DEFAULT_MAX_RETRIES,
        max_proxy_retries,
        f"{DEFAULT_MAX_RETRIES} origin-side retries per request, with backoff (GATEWAY_MAX_RETRIES; "
        "they replace RetryMiddleware's RETRY_TIMES for what the gateway handles)",
        False,
    )


def _ceilings(settings: Any) -> tuple[int, dict[str, int]]:
    """What Scrapy's Downloader gives each slot: DOWNLOAD_SLOTS entries, else the per-IP or
    per-domain limit (read the way scrapy.core.downloader.Downloader reads them)."""
    try:
        per_ip = _number(int, 0)(settings.get("CONCURRENT_REQUESTS_PER_IP", 0))
        per_domain = _number(int, 1)(settings.get("CONCURRENT_REQUESTS_PER_DOMAIN", 8))
    except ValueError as exc:
        raise ConfigError(f"CONCURRENT_REQUESTS_PER_DOMAIN/_PER_IP: {exc}") from None
    slots = settings.get("DOWNLOAD_SLOTS") or {}
    if hasattr(slots, "copy_to_dict"):
        slots = slots.copy_to_dict()
    ceilings: dict[str, int] = {}
    if isinstance(slots, Mapping):
        for key, entry in slots.items():
            if isinstance(entry, Mapping) and entry.get("concurrency") is not None:
                try:
                    ceilings[str(key)] = _number(int, 1)(entry["concurrency"])
                except ValueError as exc:
                    raise ConfigError(f"DOWNLOAD_SLOTS[{key!r}]['concurrency']: {exc}") from None
    return per_ip or per_domain, ceilings


def read_proxies(
    value: Any, path: str | None, *, list_name: str = "GATEWAY_PROXIES", file_name: str = "GATEWAY_PROXIES_FILE"
) -> list[Proxy]:
    """A list (or text) of proxy URLs plus a file's, de-duplicated; a ConfigError names `list_name`
    or `file_name` (gateway-check passes its own option names) and the entry."""
    if isinstance(value, str):
        entries = split_proxy_text(value)
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{list_name}: every entry must be a string such as 'http://host:port'")
        entries = [item.strip() for item in value if item.strip()]
    else:
        raise ConfigError(f"{list_name}: expected a list of proxy URLs or a string, got {type(value).__name__}")
    try:
        proxies = parse_proxies(entries, source=list_name)
        if path:
            try:
                text = Path(path).read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(f"{file_name}: cannot read {path!r}: {exc.__class__.__name__}") from None
            proxies += parse_proxies(split_proxy_text(text), source=f"{file_name} {path!r}")
    except ProxyListError as exc:
        raise ConfigError(str(exc)) from None
    unique = {p.key: p for p in reversed(proxies)}
    return list(reversed(unique.values()))
