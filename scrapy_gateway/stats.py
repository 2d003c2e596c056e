"""Every stats key scrapy-gateway writes, spelled once. All live under `gateway/`.

Keys never contain credentials: proxies appear only by `Proxy.key`, which has no password, and
only in the opt-in close table (log), never as stats keys, to keep the stats small.
"""

from __future__ import annotations

PREFIX = "gateway"

RETRY_BASE = f"{PREFIX}/retry"  # get_retry_request adds /count, /reason_count/<kind>, /max_reached
REQUESTS = f"{PREFIX}/requests"  # first attempts that went through the gateway
PROXIES_TOTAL = f"{PREFIX}/proxies/total"
PROXIES_ACTIVE = f"{PREFIX}/proxies/active"
PROXIES_EJECTED = f"{PREFIX}/proxies/ejected"
PROXIES_RETIRED = f"{PREFIX}/proxies/retired"
EJECTIONS = f"{PREFIX}/ejections/count"
READMISSIONS = f"{PREFIX}/readmissions"
RETIREMENTS = f"{PREFIX}/retirements"
PAIR_EJECTIONS = f"{PREFIX}/pair_ejections/count"
PAIR_READMISSIONS = f"{PREFIX}/pair_readmissions"
PANIC = f"{PREFIX}/panic"
CONCURRENCY_DECREASES = f"{PREFIX}/concurrency/decreases"
CONCURRENCY_HELD_BACK = f"{PREFIX}/concurrency/held_back"  # slow start gave back a doubtful failure's room
CONCURRENCY_UNHEARD = f"{PREFIX}/concurrency/unheard"  # slow start freed the rooms of requests long unanswered
CONCURRENCY_INCREASES = f"{PREFIX}/concurrency/increases"
BUDGET_EXHAUSTED = f"{PREFIX}/budget/exhausted"
RETRY_AFTER_COUNT = f"{PREFIX}/retry_after/count"
RETRY_AFTER_MAX = f"{PREFIX}/retry_after/max_seconds"
WAITING_MAX = f"{PREFIX}/waiting/max"
WAITING_PERSISTED = f"{PREFIX}/waiting/persisted"
WAITING_CANCELLED = f"{PREFIX}/waiting/cancelled"
REROUTED = f"{PREFIX}/rerouted"  # attempts moved off a proxy taken out while they queued for their slot
NO_PROXY_WAITS = f"{PREFIX}/no_proxy/waits"
NO_PROXY_ERRORS = f"{PREFIX}/no_proxy/errors"
GATES_OPENED = f"{PREFIX}/gates/opened"
GATES_CLOSED = f"{PREFIX}/gates/closed"
GATES_PROBES = f"{PREFIX}/gates/probes"
GATES_HELD = f"{PREFIX}/gates/held"  # times a request was held by an open gate
# Of those, requests held back as their transfer started (the gate opened while they queued for
# their slot): Scrapy's downloader/request_count counted them, but nothing was sent.
GATES_HELD_AT_START = f"{PREFIX}/gates/held_at_start"
GATES_STALLED = f"{PREFIX}/gates/stalled"  # requests ended because a gate stayed open too long
GATES_MAX_SECONDS = f"{PREFIX}/gates/max_seconds"
# Origin verdicts shown wrong by what followed: the path's failures turned out an outlier (blame.py)
BLAME_OVERTURNED = f"{PREFIX}/blame/origin_overturned"
FORGIVEN = f"{PREFIX}/gates/forgiven"  # proxies re-admitted after a provider-wide outage
FLEET_WAITS = f"{PREFIX}/fleet/lease_waits"  # downloads that waited for a fleet-wide lease
FLEET_LOST = f"{PREFIX}/fleet/lost"  # times the shared state stopped answering mid-crawl
FLEET_UNLEASED = f"{PREFIX}/fleet/unleased"  # downloads that went without a lease while it was lost
FLEET_LEARNED = f"{PREFIX}/fleet/learned"  # proxies or pairs taken out because another process did
FLEET_HEARD = f"{PREFIX}/fleet/heard"  # outcomes other processes saw, learned here (heard.py)


def failure(kind: str) -> str:
    return f"{PREFIX}/failures/{kind}"


def blame(who: str) -> str:
    return f"{PREFIX}/blame/{who}"


def retry_blame(who: str) -> str:
    return f"{RETRY_BASE}/blame/{who}"


def ejection(cause: str) -> str:
    return f"{PREFIX}/ejections/{cause}"


def pair_ejection(cause: str) -> str:
    return f"{PREFIX}/pair_ejections/{cause}"


def concurrency_limit(slot: str) -> str:
    return f"{PREFIX}/concurrency/limit/{slot}"
