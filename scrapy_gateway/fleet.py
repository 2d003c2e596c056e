"""Fleet-wide in-flight leases per download slot, in Redis (`GATEWAY_STATE = "redis://..."`).

Each crawler process keeps its own state and learns its own limits, as it does alone; what the
fleet shares (this first step of it) is the count of requests in flight per download slot. A
transfer starts only with a lease: a member of the sorted set `<prefix>:inflight:<slot>`, scored
by its expiry on Redis's own clock (machines' clocks may disagree). One Lua script drops expired
members and grants a lease while the set holds fewer than the caller's limit, which is its slot's
concurrency: the user's CONCURRENT_REQUESTS_PER_DOMAIN, or what the process's concurrency control
has learnt about the origin. So the fleet never has more in flight on a slot than the largest
limit one of its processes holds, instead of the sum of them: four processes that have each
learnt an origin's capacity N keep it at N (N + 1 while one probes above it), not at 4N.

A request refused a lease waits (asyncio sleeps: nothing blocks) and asks again, from 5 ms up to
20 ms apart. A finished download's lease stays with the process for 10 ms, for its next download
on the same slot (up to 32 downloads per lease, then it goes back to the fleet): a busy slot costs
Redis a round trip per lease, not per request. Leases are renewed every third of `ttl` while
they are held; a process killed with SIGKILL returns its share when its leases expire, `ttl`
seconds at most.

Redis lost mid-crawl: the process goes on alone (its local limits only), logs one WARNING, asks
Redis again every second and logs when it has rejoined; no request waits on a dead Redis longer
than one socket timeout, and none is lost. Redis unreachable at start-up is an error instead:
a fleet that silently runs unshared would overload what it was set up to protect.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from scrapy_gateway import stats as keys

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

logger = logging.getLogger("scrapy_gateway")

# The number of processes holding leases in KEYS[1] (lease ids are "<process token>:<n>").
_HOLDERS = """
local function holders(key)
  local seen, count = {}, 0
  for _, lease in ipairs(redis.call('ZRANGE', key, 0, -1)) do
    local token = string.match(lease, '^[^:]+')
    if not seen[token] then
      seen[token] = true
      count = count + 1
    end
  end
  return count
end
"""

# Redis's own clock (the fleet's machines may disagree), and the expired leases of KEYS[1] dropped.
_EXPIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""

# KEYS[1]: the slot's lease set. ARGV: lease id, limit, ttl (seconds). {1 granted / 0 full, holders}.
_ACQUIRE = (
    _HOLDERS
    + _EXPIRE
    + """
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return {0, holders(KEYS[1])}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 1000)
return {1, holders(KEYS[1])}
"""
)

# KEYS[1]: a slot's lease set. ARGV: ttl, then lease ids: extended only if still there (XX).
_RENEW = (
    _HOLDERS
    + _EXPIRE
    + """
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
return holders(KEYS[1])
"""
)

_FIRST_WAIT = 0.005  # seconds before a refused request asks again; doubles up to _MAX_WAIT
_MAX_WAIT = 0.02
_SPARE_FOR = 0.01  # seconds a finished download's lease waits for this process's next download
_REUSES = 32  # downloads one lease carries before it goes back to the fleet (others get a turn)
_REJOIN_EVERY = 1.0  # seconds between tries to reach a lost Redis
SOCKET_TIMEOUT = 1.0  # seconds a Redis command may take before Redis counts as lost


class FleetUnavailable(RuntimeError):
    """Redis did not answer at start-up; the message names GATEWAY_STATE (password masked)."""


def masked_url(url: str) -> str:
    """The Redis URL with its password (in the user part or a `password=` query) as ***."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:***" if parts.username else ":***"
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}" if sep else name
        for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    # By hand: urlunsplit drops the empty authority of unix:///path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


class FleetLeases:
    def __init__(
        self,
        url: str,
        prefix: str,
        ttl: float,
        stats: StatsCollector,
        clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.stats = stats
        self.clock = clock
        self.rng = rng or random.Random()
        self._token = uuid.uuid4().hex[:12]  # this process, in its lease ids
        self._numbers = itertools.count()
        self._held: dict[str, set[str]] = {}  # slot -> lease ids this process holds there
        # slot -> held leases no download uses right now, with when they became spare
        self._spare: dict[str, list[tuple[str, float]]] = {}
        self._uses: dict[str, int] = {}  # lease -> downloads it has carried
        self._flush_timer: asyncio.TimerHandle | None = None
        self._holders: dict[str, int] = {}  # slot -> processes holding leases there, last seen
        self._client: Any = None
        self._acquire: Any = None
        self._renew: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._lost_since: float | None = None
        self._next_rejoin = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Task[Any]] = set()

    @property
    def shared(self) -> bool:
        """Whether leases come from Redis now (False while it is lost)."""
        return self._client is not None and self._lost_since is None

    def holders(self, slot: str) -> int:
        """Processes of the fleet with downloads on `slot` when Redis last said (1: only this one)."""
        return self._holders.get(slot, 1) if self.shared else 1

    def _key(self, slot: str) -> str:
        return f"{self.prefix}:inflight:{slot}"

    async def start(self) -> None:
        import redis.asyncio as aioredis  # an optional dependency: imported only with a Redis state
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError)
        self._client = aioredis.Redis.from_url(
            self.url,
            socket_timeout=SOCKET_TIMEOUT,
            socket_connect_timeout=SOCKET_TIMEOUT,
            retry=Retry(NoBackoff(), 0),  # a lost Redis is handled here, not retried under a request
        )
        try:
            await self._client.ping()
        except self._errors as exc:
            await self._client.aclose()
            self._client = None
            raise FleetUnavailable(
                f"GATEWAY_STATE: no answer from Redis at {masked_url(self.url)} ({exc.__class__.__name__}); "
                "start redis-server, or set GATEWAY_STATE = 'memory' to crawl without sharing"
            ) from None
        self._acquire = self._client.register_script(_ACQUIRE)
        self._renew = self._client.register_script(_RENEW)
        self._renewer = asyncio.ensure_future(self._renew_loop())
        logger.info(
            "scrapy-gateway: sharing per-slot in-flight counts through Redis at %(url)s (prefix %(prefix)r)",
            {"url": masked_url(self.url), "prefix": self.prefix},
        )

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            self._renewer = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._client is None:
            return
        if self.shared:
            for slot, leases in list(self._held.items()):
                if leases:
                    await self._call(self._client.zrem(self._key(slot), *leases))
        self._held.clear()
        self._spare.clear()
        self._uses.clear()
        await asyncio.gather(*self._releases, return_exceptions=True)
        await self._client.aclose()
        self._client = None

    # -- leases ----------------------------------------------------------------------------

    async def acquire(self, slot: str, limit: int) -> str | None:
        """Wait for a lease on `slot`; None when the download goes without one (Redis lost)."""
        spare = self._spare.get(slot)
        if spare and len(self._held[slot]) - len(spare) < limit:
            # The lease of a download that just finished here: no round trip to Redis. Busy
            # slots pass their leases from one download to the next this way.
            return spare.pop()[0]
        lease = f"{self._token}:{next(self._numbers)}"
        wait, waited = _FIRST_WAIT, False
        while True:
            if not self.shared and not await self._rejoin():
                self.stats.inc_value(keys.FLEET_UNLEASED)
                return None
            try:
                granted, holders = await self._acquire(keys=[self._key(slot)], args=[lease, max(1, limit), self.ttl])
            except self._errors as exc:
                self._lose(exc)
                continue
            self._holders[slot] = max(1, int(holders))
            if granted:
                self._held.setdefault(slot, set()).add(lease)
                return lease
            if not waited:
                waited = True
                self.stats.inc_value(keys.FLEET_WAITS)
            await asyncio.sleep(wait * self.rng.uniform(0.5, 1.5))
            wait = min(wait * 2.0, _MAX_WAIT)

    def release(self, slot: str, lease: str | None) -> None:
        """The download is over: keep the lease a moment for the next one here, or give it back."""
        if lease is None:
            return
        uses = self._uses.get(lease, 0) + 1
        if self.shared and uses < _REUSES:
            self._uses[lease] = uses
            self._spare.setdefault(slot, []).append((lease, self.clock()))
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(_SPARE_FOR, self._flush)
            return
        self._give_back(slot, [lease])

    def _flush(self) -> None:
        """Give back the leases that stayed spare for _SPARE_FOR; look again for the others."""
        self._flush_timer = None
        old_enough = self.clock() - _SPARE_FOR
        for slot, spare in list(self._spare.items()):
            stale = [lease for lease, since in spare if since <= old_enough]
            if stale:
                spare[:] = [(lease, since) for lease, since in spare if since > old_enough]
                self._give_back(slot, stale)
            if not spare:
                del self._spare[slot]
        if self._spare:
            self._flush_timer = asyncio.get_running_loop().call_later(_SPARE_FOR, self._flush)

    def _give_back(self, slot: str, leases: list[str]) -> None:
        held = self._held.get(slot)
        for lease in leases:
            self._uses.pop(lease, None)
            if held is not None:
                held.discard(lease)
        if held is not None and not held:
            del self._held[slot]
        if not self.shared:
            return  # they expire on their own
        task = asyncio.ensure_future(self._call(self._client.zrem(self._key(slot), *leases)))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    # -- faults ----------------------------------------------------------------------------

    async def _call(self, command: Any) -> Any:
        try:
            return await command
        except self._errors as exc:
            self._lose(exc)
            return None

    def _lose(self, exc: BaseException) -> None:
        if self._lost_since is not None:
            return
        self._lost_since = self.clock()
        self._next_rejoin = self._lost_since + _REJOIN_EVERY
        self.stats.inc_value(keys.FLEET_LOST)
        logger.warning(
            "scrapy-gateway: lost the shared state at %(url)s (%(error)s): going on with this process's own "
            "limits, and asking Redis again every %(every)gs",
            {"url": masked_url(self.url), "error": exc.__class__.__name__, "every": _REJOIN_EVERY},
        )

    async def _rejoin(self) -> bool:
        now = self.clock()
        if self._client is None or now < self._next_rejoin:
            return False
        self._next_rejoin = now + _REJOIN_EVERY
        try:
            # The pool's other connections died with the old server: drop them all, or the
            # first command through one of them loses the state again.
            await self._client.connection_pool.disconnect()
            await self._client.ping()
        except self._errors:
            return False
        if self._lost_since is None:
            return True  # another request rejoined meanwhile
        logger.info(
            "scrapy-gateway: the shared state at %(url)s answers again after %(seconds).1fs: rejoined the fleet",
            {"url": masked_url(self.url), "seconds": now - self._lost_since},
        )
        self._lost_since = None
        return True

    async def _renew_loop(self) -> None:
        while True:
            # Also how fresh `holders()` is: at least once a second.
            await asyncio.sleep(min(self.ttl / 3.0, 1.0))
            if not self.shared:
                continue
            for slot, leases in list(self._held.items()):
                if leases:
                    holders = await self._call(self._renew(keys=[self._key(slot)], args=[self.ttl, *leases]))
                    if holders is not None:
                        self._holders[slot] = max(1, int(holders))
