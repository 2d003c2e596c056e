"""What the gateway has learned, as plain JSON-able data, so a paused crawl resumes with it.

Monotonic times do not survive a restart, so cooldowns are stored as seconds remaining. Proxies
that are no longer in the pool are ignored on load; pairs and limits that are back to normal are
not stored at all.
"""

from __future__ import annotations

from typing import Any

from scrapy_gateway.core.gateway import Gateway
from scrapy_gateway.core.health import Health, HealthRules, State

VERSION = 1


def _health(health: Health, now: float, rules: HealthRules) -> dict[str, Any]:
    return {
        "score": health.score,
        "streak": health.streak,
        "state": health.state.value,
        "remaining": max(0.0, health.until - now) if health.state is State.EJECTED else 0.0,
        "ejections": health.ejections,
        "probation": health.probation,
        "strikes": health.strikes_now(rules, now),
        "worked": health.last_success > float("-inf"),
    }


def _restore(health: Health, data: dict[str, Any], now: float) -> None:
    health.score = float(data["score"])
    health.streak = int(data["streak"])
    health.state = State(data["state"])
    health.until = now + float(data["remaining"])
    health.ejections = int(data["ejections"])
    health.probation = bool(data["probation"])
    health.strikes = float(data.get("strikes", health.ejections))  # absent in files of 0.1
    if data.get("worked"):  # monotonic times do not survive: it worked, so "just now"
        health.last_success = now
        health.back_at = now if health.state is State.ACTIVE else None


def dump(gateway: Gateway, now: float) -> dict[str, Any]:
    pairs = [
        [proxy, domain, _health(health, now, gateway.policy.health)]
        for (proxy, domain), health in gateway.pool.pairs.items()
        if health.state is not State.ACTIVE or health.score > 0.05
    ]
    return {
        "version": VERSION,
        "proxies": {
            r.proxy.key: {
                **_health(r.health, now, gateway.policy.health),
                "requests": r.requests,
                "successes": r.successes,
                "failures": dict(r.failures),
            }
            for r in gateway.pool
        },
        "pairs": pairs,
        "limits": gateway.concurrency.export(),
    }


def load(gateway: Gateway, data: dict[str, Any], now: float) -> int:
    """Restore what `dump` wrote; return how many proxies were restored. Raises ValueError on junk."""
    if not isinstance(data, dict) or data.get("version") != VERSION:
        raise ValueError("not a scrapy-gateway state of a known version")
    restored = 0
    try:
        for key, saved in data["proxies"].items():
            record = gateway.pool.records.get(key)
            if record is None:
                continue
            _restore(record.health, saved, now)
            record.requests = int(saved["requests"])
            record.successes = int(saved["successes"])
            record.failures = {str(k): int(v) for k, v in saved["failures"].items()}
            restored += 1
        for proxy, domain, saved in data["pairs"]:
            if proxy in gateway.pool.records:
                _restore(gateway.pool.pair(proxy, domain), saved, now)
        gateway.concurrency.restore(data["limits"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed scrapy-gateway state: {exc!r}") from None
    return restored
