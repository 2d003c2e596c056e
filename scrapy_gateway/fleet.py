"""Fleet-wide in-flight leases and limits per download slot, in Redis (`GATEWAY_STATE`).

What the fleet shares (this first step of it): each download slot's in-flight count and its
concurrency limit. A transfer starts only with a lease: a member of the sorted set
`<prefix>:inflight:<slot>`, scored by its expiry on Redis's own clock (machines' clocks may
disagree). One Lua script drops expired members and grants a lease while the set holds fewer than
the slot's fleet limit, `<prefix>:limit:<slot>` (fleet_limits.py: ConcurrencyControl's AIMD run
in Redis and fed by every process: clean responses in batches every 50 ms, overloads at once).
So an origin of capacity N sees about N in flight from the whole fleet, not N per process, and
the fleet learns N once, from all its traffic. Each process applies the fleet's limit to its own
slot too. The proxies a process takes out (ejections, retirements, bans) are published in the
stream `<prefix>:proxies`; the others take them out too, for what is left of the cooldown
(ProxyPool.learned). Every outcome is shared too (fleet_evidence.py): blame history, scores,
latencies, outage evidence and retry budgets are the fleet's.

A request refused a lease waits (asyncio sleeps: nothing blocks) and asks again, from 5 ms up to
20 ms apart. A finished download's lease stays with the process for 10 ms, for its next download
on the same slot (up to 32 downloads per lease, then it goes back to the fleet; and none granted
before the slot's limit last went down, so that a cut holds): a busy slot costs Redis a round trip
per lease, not per request. Not where the fleet's limit is below the user's or in slow start:
there a lease passed on would carry one more download past a cut another process made a moment
ago (at an origin of capacity 2, each probe cost 2-4 past-capacity errors that way), so each
download asks Redis, giving back the last one's lease in the same script. Leases are renewed
every third of `ttl` while they are held; a process killed with SIGKILL returns its share when
its leases expire, `ttl` seconds at most.

Redis lost mid-crawl: the process goes on alone (its own limits, which it kept learning), logs one
WARNING, asks Redis again every second and logs when it has rejoined; no request waits on a dead
Redis longer than one socket timeout, and none is lost. Redis unreachable at start-up is an error
instead: a fleet that silently runs unshared would overload what it was set up to protect.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import random
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from scrapy_gateway import stats as keys
from scrapy_gateway.core.concurrency import Phase
from scrapy_gateway.core.events import Ejected, Event, PairEjected, Retired
from scrapy_gateway.fleet_limits import CLEAN, DOUBTFUL, LATE, LIMIT_FOR_LEASE, OUTAGE, OVERLOAD
from scrapy_gateway.masking import masked_url

if TYPE_CHECKING:
    from scrapy.statscollectors import StatsCollector

    from scrapy_gateway.core.concurrency import ConcurrencyControl

logger = logging.getLogger("scrapy_gateway")


def cancellations() -> int:
    """How many cancellations the running task has been asked for and not withdrawn (0 before
    Python 3.11, which does not count them).

    A Redis call can return normally although its task was cancelled: redis-py waits for its
    writes with asyncio.wait_for, which in Python 3.11 drops a cancellation that arrives as the
    write completes. A lease request looping on a full slot would then never end, and neither
    would the download waiting for it. So every call here compares the count before and after,
    and raises the cancellation itself.
    """
    task = asyncio.current_task()
    counted = getattr(task, "cancelling", None)
    return int(counted()) if counted is not None else 0


# Redis's own clock (the fleet's machines may disagree), and the expired leases of KEYS[1] dropped.
_EXPIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
"""

# KEYS: the slot's lease set, its limit. ARGV: lease id, ceiling, ttl (seconds), slow start's first
# limit, then leases this process gives back first (its downloads' that just ended). {1 granted /
# 0 full, Redis time in ms, leases held now, then the fleet's limit and its phase as
# fleet_limits.py's scripts return them}.
_ACQUIRE = (
    LIMIT_FOR_LEASE
    + _EXPIRE
    + """
if #ARGV > 4 then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 5))
end
local now_ms = math.floor(now * 1000)
local held = redis.call('ZCARD', KEYS[1])
if held >= limit then
  return {0, now_ms, held, phase[1], phase[2], phase[3], phase[4]}
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[3]) * 1000) + 1000)
return {1, now_ms, held + 1, phase[1], phase[2], phase[3], phase[4]}
"""
)

# KEYS[1]: a slot's lease set. ARGV: ttl, then lease ids: extended if still there; the number of
# those that were not (Redis restarted empty, or they expired while this process stalled).
_RENEW = (
    _EXPIRE
    + """
local missing = 0
for i = 2, #ARGV do
  if redis.call('ZSCORE', KEYS[1], ARGV[i]) then
    redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  else
    missing = missing + 1
  end
end
redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) * 1000) + 1000)
return missing
"""
)

_CLEANS_EVERY = 0.05  # seconds between reports of clean responses to the fleet's limits
_PROXY_NEWS_EVERY = 0.5  # seconds between looks at what other processes learnt about proxies
_PROXY_NEWS_KEPT = 10_000  # entries of that stream Redis keeps (approximately)
_PROXY_NEWS_HISTORY = 3600.0  # seconds back a starting process reads (cooldowns last up to this)
_FIRST_WAIT = 0.005  # seconds before a refused request asks again; doubles up to _MAX_WAIT
_MAX_WAIT = 0.02
_SPARE_FOR = 0.01  # seconds a finished download's lease waits for this process's next download
_REUSES = 32  # downloads one lease carries before it goes back to the fleet (others get a turn)
_REJOIN_EVERY = 1.0  # seconds between tries to reach a lost Redis
_MAX_SLOTS = 10_000  # slots whose fleet limit and cut count are kept (GATEWAY_MAX_TRACKED_DOMAINS' default)
SOCKET_TIMEOUT = 1.0  # seconds a Redis command may take before Redis counts as lost


class FleetUnavailable(RuntimeError):
    """Redis did not answer at start-up; the message names GATEWAY_STATE (password masked)."""


class FleetLeases:
    def __init__(
        self,
        url: str,
        prefix: str,
        ttl: float,
        stats: StatsCollector,
        clock: Callable[[], float],
        control: ConcurrencyControl,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.stats = stats
        self.clock = clock
        self.control = control  # the AIMD's parameters; the fleet's limits run them in Redis
        self.rng = rng or random.Random()
        self._token = uuid.uuid4().hex[:12]  # this process, in its lease ids
        self._numbers = itertools.count()
        self._held: dict[str, set[str]] = {}  # slot -> lease ids this process holds there
        # slot -> held leases no download uses right now, with when they became spare
        self._spare: dict[str, list[tuple[str, float]]] = {}
        self._uses: dict[str, int] = {}  # lease -> downloads it has carried
        # Leases granted since the slot's fleet limit last went down may pass to the next
        # download here; older ones go back, so that a cut holds for the fleet (acquire counts).
        self._epochs: dict[str, int] = {}  # slot -> cuts of its fleet limit seen
        self._lease_epochs: dict[str, int] = {}  # lease -> its slot's epoch when granted
        self._flush_timer: asyncio.TimerHandle | None = None
        self._limits: dict[str, int] = {}  # slot -> the fleet's limit, as Redis last said
        self._phases: dict[str, Phase] = {}  # slot -> that limit's phase (same slots as _limits)
        self._late: dict[str, int] = {}  # slot -> the most downloads told long unanswered there
        self._ceilings: dict[str, int] = {}  # slot -> the user's limit there, as the last lease said
        # slot -> leases of downloads that ended on a throttled slot, with when: given back with
        # the next lease asked for there (one round trip), or after _SPARE_FOR
        self._returning: dict[str, list[tuple[str, float]]] = {}
        self._grant_loads: dict[str, int] = {}  # lease -> leases held fleet-wide when granted (until read)
        # slot -> (clean responses not reported, ceiling, the most in flight when one was sent)
        self._cleans: dict[str, tuple[int, int, int]] = {}
        self._orphans: dict[str, list[str]] = {}  # slot -> leases given back while Redis was lost
        self._offset = 0.0  # Redis time minus this process's clock, as of the last lease
        # Called with (slot, limit) when the fleet's limit of a slot changes.
        self.on_limit: Callable[[str, int], None] | None = None
        self.on_rejoin: Callable[[], None] | None = None  # called when Redis answers again
        # Called with (event, seconds of it left) for each proxy another process took out.
        self.on_proxy_news: Callable[[Event, float], None] | None = None
        self._news_seen = "0-0"
        self._newsreader: asyncio.Task[None] | None = None
        self._reporter: asyncio.Task[None] | None = None
        self._client: Any = None
        self._acquire: Any = None
        self._renew: Any = None
        self._errors: tuple[type[BaseException], ...] = (OSError,)
        self._lost_since: float | None = None
        self._next_rejoin = 0.0
        self._renewer: asyncio.Task[None] | None = None
        self._releases: set[asyncio.Future[Any]] = set()

    # For fleet_waiting.py, which shares this connection and its fault handling.
    @property
    def token(self) -> str:
        return self._token

    @property
    def client(self) -> Any:
        return self._client

    async def call(self, command: Any) -> Any:
        """Await a Redis command; None (and the state counted lost) if Redis fails."""
        return await self._call(command)

    def spawn(self, command: Any) -> None:
        """Run a Redis command without waiting for it (kept until done, awaited at close)."""
        self._spawn(command)

    def track(self, task: asyncio.Future[Any]) -> None:
        """A task of Redis writes that close() must wait for."""
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def redis_now(self) -> float:
        """Redis's clock (seconds), as of this process's last exchange with it."""
        return self.clock() + self._offset

    @property
    def shared(self) -> bool:
        """Whether leases come from Redis now (False while it is lost)."""
        return self._client is not None and self._lost_since is None

    def limit(self, slot: str) -> int | None:
        """The fleet's limit of `slot`, as Redis last said (None: not known, or Redis lost)."""
        return self._limits.get(slot) if self.shared else None

    def phase(self, slot: str) -> Phase | None:
        """The phase of the fleet's limit of `slot`, as Redis last said (None: not known, or
        Redis lost): what judges the slot's failures (Gateway.fleet_phase)."""
        return self._phases.get(slot) if self.shared and slot in self._limits else None

    def load_of(self, lease: str | None) -> int | None:
        """The fleet's in-flight count on the lease's slot when Redis granted it, this lease
        included, for the first download it carries (None for the next ones: a lease passed on
        within this process does not ask Redis, so nothing fresh is known)."""
        return None if lease is None else self._grant_loads.pop(lease, None)

    def _limit_key(self, slot: str) -> str:
        return f"{self.prefix}:limit:{slot}"

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
        self._clean = self._client.register_script(CLEAN)
        self._overload = self._client.register_script(OVERLOAD)
        self._outage = self._client.register_script(OUTAGE)
        self._doubtful = self._client.register_script(DOUBTFUL)
        self._late_script = self._client.register_script(LATE)
        seconds, micros = await self._client.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        self._offset = now_ms / 1000.0 - self.clock()
        self._news_seen = f"{max(0, now_ms - int(_PROXY_NEWS_HISTORY * 1000))}-0"
        self._renewer = asyncio.ensure_future(self._renew_loop())
        self._reporter = asyncio.ensure_future(self._report_loop())
        await self._read_news()
        self._newsreader = asyncio.ensure_future(self._news_loop())
        logger.info(
            "scrapy-gateway: sharing per-slot in-flight counts through Redis at %(url)s (prefix %(prefix)r)",
            {"url": masked_url(self.url), "prefix": self.prefix},
        )

    async def close(self) -> None:
        for task in (self._renewer, self._reporter, self._newsreader):
            if task is not None:
                task.cancel()
        self._renewer = self._reporter = self._newsreader = None
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        if self._client is None:
            return
        try:
            if self.shared:
                for slot, leases in list(self._held.items()):
                    if leases:
                        await self._call(self._client.zrem(self._key(slot), *leases))
        finally:  # a cancellation on the way must not leave the client open
            self._held.clear()
            self._spare.clear()
            self._returning.clear()
            self._uses.clear()
            self._lease_epochs.clear()
            try:
                await asyncio.gather(*self._releases, return_exceptions=True)
            finally:
                await self._client.aclose()
                self._client = None

    # -- leases ----------------------------------------------------------------------------

    async def acquire(self, slot: str, ceiling: int) -> str | None:
        """Wait for a lease on `slot` (`ceiling`: the user's limit there); None when the download
        goes without one (Redis lost)."""
        spare = self._spare.get(slot)
        if spare and len(self._held[slot]) - len(spare) < self._limits.get(slot, ceiling):
            # (Spares all belong to the current epoch: a cut gives the older ones back.)
            # The lease of a download that just finished here: no round trip to Redis. Busy
            # slots pass their leases from one download to the next this way.
            return spare.pop()[0]
        lease = f"{self._token}:{next(self._numbers)}"
        if self._ceilings.get(slot) != ceiling:
            self._keep(self._ceilings, slot, ceiling)
        wait, waited = _FIRST_WAIT, False
        cancels = cancellations()
        while True:
            if not self.shared and not await self._rejoin():
                self.stats.inc_value(keys.FLEET_UNLEASED)
                return None
            if cancellations() > cancels:
                raise asyncio.CancelledError  # swallowed while asking Redis again (see cancellations)
            back = [old for old, _since in self._returning.pop(slot, ())]
            args = [lease, ceiling, self.ttl, self.control.initial, *back]
            self._forget(slot, back)
            try:
                granted, now_ms, held, *limit = await self._acquire(
                    keys=[self._key(slot), self._limit_key(slot)], args=args
                )
                if cancellations() > cancels:
                    raise asyncio.CancelledError  # one that redis-py swallowed (see cancellations)
            except self._errors as exc:
                self._lose(exc)
                if back:
                    self._orphans.setdefault(slot, []).extend(back)  # given back once Redis answers
                continue
            except asyncio.CancelledError:
                # Redis may have granted it as the download was cancelled: nobody would give it back.
                self._spawn(self._call(self._client.zrem(self._key(slot), lease)))
                raise
            self._offset = int(now_ms) / 1000.0 - self.clock()
            self._learn(slot, limit)
            if granted:
                self._grant_loads[lease] = int(held)
                self._held.setdefault(slot, set()).add(lease)
                self._lease_epochs[lease] = self._epochs.get(slot, 0)
                return lease
            if not waited:
                waited = True
                self.stats.inc_value(keys.FLEET_WAITS)
            await asyncio.sleep(wait * self.rng.uniform(0.5, 1.5))
            wait = min(wait * 2.0, _MAX_WAIT)

    # -- the fleet's limits ------------------------------------------------------------------

    def clean(self, slot: str, ceiling: int, load: int | None = None) -> None:
        """A clean response on `slot` (`ceiling`: the user's limit there; `load`: the fleet's in
        flight when it was sent): reported with the others every _CLEANS_EVERY seconds."""
        if self.shared:
            count, _ceiling, most = self._cleans.get(slot, (0, ceiling, 0))
            self._cleans[slot] = (count + 1, ceiling, max(most, load or 0))

    def overloaded(self, slot: str, ceiling: int, sent_at: float, load: int | None = None) -> None:
        """An origin-blamed overload of a request that left at `sent_at` (this process's clock)
        with `load` in flight on the slot, fleet-wide."""
        if not self.shared:
            return
        control = self.control
        args = [sent_at + self._offset, ceiling, control.minimum, control.beta, control.initial, load or 0]
        args += self._pending_cleans(slot)
        self._spawn(self._limit_call(slot, self._overload(keys=[self._limit_key(slot)], args=args)))

    def doubtful(self, slot: str, ceiling: int, load: int | None) -> None:
        """A status failure not blamed on the origin (ConcurrencyControl.doubtful), at once."""
        if self.shared:
            args = [ceiling, self.control.initial, self.control.minimum, load or 0, *self._pending_cleans(slot)]
            self._spawn(self._limit_call(slot, self._doubtful(keys=[self._limit_key(slot)], args=args)))

    def late(self, slot: str, ceiling: int, waiting: int) -> bool:
        """`waiting` downloads of this process on `slot` have waited long with nothing heard back
        (deadlines.py): while the fleet's limit is in slow start, their rooms go to the next
        requests (fleet_limits.py, `late`). Each process tells only how many more wait than it
        told before, so the fleet's count is the sum. Whether it told Redis."""
        phase = self.phase(slot)
        told = self._late.get(slot, 0)
        if phase is None or not phase.starting or waiting <= told:
            return False
        self._keep(self._late, slot, waiting)
        args = [ceiling, self.control.initial, waiting - told, *self._pending_cleans(slot)]
        self._spawn(self._limit_call(slot, self._late_script(keys=[self._limit_key(slot)], args=args)))
        return True

    def outage(self, slot: str, ceiling: int) -> None:
        """An outage gate opened on `slot`: the cuts since its last clean response were the outage's."""
        if self.shared:
            args = [ceiling, self.control.initial]
            self._spawn(self._limit_call(slot, self._outage(keys=[self._limit_key(slot)], args=args)))

    def _pending_cleans(self, slot: str) -> list[float]:
        """The slot's clean responses not reported yet, taken along by a script that must come
        after them (count, caution, the most in flight when one was sent)."""
        count, _ceiling, most = self._cleans.pop(slot, (0, 0, 0))
        return [count, self.control.caution, most]

    async def _limit_call(self, slot: str, command: Any) -> None:
        reply = await self._call(command)
        if reply is not None:
            self._learn(slot, reply)

    def _learn(self, slot: str, reply: list[int]) -> None:
        """What a script said of the slot's limit: {limit, starting, growing, probing}."""
        limit, starting, growing, probing = (int(value) for value in reply)
        self._phases[slot] = Phase(bool(starting), bool(growing), bool(probing))
        known = self._limits.get(slot)
        if known != limit:
            self._keep(self._limits, slot, limit)
            if known is not None and limit < known:
                self._new_epoch(slot)
            if self.on_limit is not None:
                self.on_limit(slot, limit)

    def _keep(self, table: dict[str, int], slot: str, value: int) -> None:
        """Set a per-slot value, most recent last; a broad crawl's oldest slots are forgotten
        (their limit is asked again with the next lease), never one holding leases here."""
        table.pop(slot, None)
        table[slot] = value
        if len(table) > _MAX_SLOTS:
            for old in list(table)[: len(table) - _MAX_SLOTS + 64]:
                if old not in self._held:
                    del table[old]
                    if table is self._limits:
                        self._phases.pop(old, None)  # a limit's phase goes with it

    def _new_epoch(self, slot: str) -> None:
        """The leases held on `slot` may no longer be passed on (a cut, or Redis lost them)."""
        self._keep(self._epochs, slot, self._epochs.get(slot, 0) + 1)
        for kept in (self._spare, self._returning):
            spare = kept.pop(slot, None)
            if spare:
                self._give_back(slot, [lease for lease, _since in spare])

    async def _report_loop(self) -> None:
        while True:
            await asyncio.sleep(_CLEANS_EVERY)
            if not self.shared or not self._cleans:
                continue
            cleans, self._cleans = self._cleans, {}
            for slot, (count, ceiling, most) in cleans.items():
                args = [count, ceiling, self.control.caution, self.control.initial, most]
                await self._limit_call(slot, self._clean(keys=[self._limit_key(slot)], args=args))

    def _spawn(self, command: Any) -> None:
        self.track(asyncio.ensure_future(command))

    def release(self, slot: str, lease: str | None) -> None:
        """The download is over: keep the lease a moment for the next one here, or give it back."""
        if lease is None:
            return
        uses = self._uses.get(lease, 0) + 1
        current = self._lease_epochs.get(lease) == self._epochs.get(slot, 0)
        if self.shared and uses < _REUSES and current:
            self._uses[lease] = uses
            kept = self._returning if self._throttled(slot) else self._spare
            kept.setdefault(slot, []).append((lease, self.clock()))
            if self._flush_timer is None:
                self._flush_timer = asyncio.get_running_loop().call_later(_SPARE_FOR, self._flush)
            return
        self._give_back(slot, [lease])

    def _throttled(self, slot: str) -> bool:
        """The fleet's limit of `slot` is below the user's, or in slow start: where a cut matters,
        each download asks Redis, which knows of a cut another process made a moment ago (a spare
        lease passed on here would carry one more request past the origin's capacity)."""
        phase, limit = self._phases.get(slot), self._limits.get(slot)
        return phase is not None and (phase.starting or limit is None or limit < self._ceilings.get(slot, limit + 1))

    def _flush(self) -> None:
        """Give back the leases that stayed spare for _SPARE_FOR; look again for the others."""
        self._flush_timer = None
        old_enough = self.clock() - _SPARE_FOR
        for kept in (self._spare, self._returning):
            for slot, spare in list(kept.items()):
                stale = [lease for lease, since in spare if since <= old_enough]
                if stale:
                    spare[:] = [(lease, since) for lease, since in spare if since > old_enough]
                    self._give_back(slot, stale)
                if not spare:
                    del kept[slot]
        if self._spare or self._returning:
            self._flush_timer = asyncio.get_running_loop().call_later(_SPARE_FOR, self._flush)

    def _forget(self, slot: str, leases: list[str]) -> None:
        """Leases on their way back to Redis: this process holds them no more."""
        held = self._held.get(slot)
        for lease in leases:
            self._uses.pop(lease, None)
            self._lease_epochs.pop(lease, None)
            if held is not None:
                held.discard(lease)
        if held is not None and not held:
            del self._held[slot]

    def _give_back(self, slot: str, leases: list[str]) -> None:
        self._forget(slot, leases)
        if not self.shared:
            self._orphans.setdefault(slot, []).extend(leases)  # given back once Redis answers
            return
        self._spawn(self._call(self._client.zrem(self._key(slot), *leases)))

    # -- what the fleet learns about proxies -------------------------------------------------

    @property
    def _news_key(self) -> str:
        return f"{self.prefix}:proxies"

    def publish_proxy_news(self, event: Event) -> None:
        """This process took a proxy (or a pair) out: the fleet's other processes take it out too."""
        if not self.shared:
            return
        if isinstance(event, Ejected):
            kind, domain, seconds = "ejected", "", event.seconds
        elif isinstance(event, PairEjected):
            kind, domain, seconds = "pair", event.domain, event.seconds
        elif isinstance(event, Retired):
            kind, domain, seconds = "retired", "", 0.0
        else:
            return
        fields = {"kind": kind, "proxy": event.proxy, "domain": domain, "cause": event.cause, "s": seconds}
        fields["by"] = self._token
        self._spawn(self._call(self._client.xadd(self._news_key, fields, maxlen=_PROXY_NEWS_KEPT, approximate=True)))

    async def _news_loop(self) -> None:
        while True:
            await self._read_news()  # the first time before the crawl's first request
            await asyncio.sleep(_PROXY_NEWS_EVERY)

    async def _read_news(self) -> None:
        if not self.shared or self.on_proxy_news is None:
            return
        while True:
            found = await self._call(self._client.xread({self._news_key: self._news_seen}, count=500))
            taken = 0
            for _stream, entries in found or ():
                for entry_id, fields in entries:
                    self._news_seen = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
                    self._take_news(self._news_seen, fields)
                    taken += 1
            if taken < 500:
                return

    def _take_news(self, entry_id: str, fields: dict[bytes, bytes]) -> None:
        try:
            by, kind = fields[b"by"].decode(), fields[b"kind"].decode()
            proxy, domain, cause = fields[b"proxy"].decode(), fields[b"domain"].decode(), fields[b"cause"].decode()
            seconds, at_ms = float(fields[b"s"]), int(entry_id.split("-", 1)[0])
        except (KeyError, ValueError, UnicodeDecodeError):
            return  # not an entry of this version: ignored
        if by == self._token or self.on_proxy_news is None:
            return
        age = self.redis_now() - at_ms / 1000.0  # on Redis's clock
        event: Event
        if kind == "ejected":
            event = Ejected(proxy, cause, seconds)
        elif kind == "pair":
            event = PairEjected(proxy, domain, cause, seconds)
        elif kind == "retired":
            event = Retired(proxy, cause)
        else:
            return
        self.on_proxy_news(event, seconds - age)

    # -- faults ----------------------------------------------------------------------------

    async def _call(self, command: Any) -> Any:
        cancels = cancellations()
        try:
            result = await command
        except self._errors as exc:
            self._lose(exc)
            result = None
        if cancellations() > cancels:
            raise asyncio.CancelledError  # one that redis-py swallowed (see cancellations)
        return result

    def _lose(self, exc: BaseException) -> None:
        if self._lost_since is not None:
            return
        self._lost_since = self.clock()
        self._next_rejoin = self._lost_since + _REJOIN_EVERY
        # Redis may come back without them: none of the leases held now carries another download.
        for slot in list(self._held):
            self._new_epoch(slot)
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
        orphans, self._orphans = self._orphans, {}
        for slot, leases in orphans.items():
            self._spawn(self._call(self._client.zrem(self._key(slot), *leases)))
        if self.on_rejoin is not None:
            self.on_rejoin()
        return True

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3.0)
            if not self.shared:
                continue
            for slot, leases in list(self._held.items()):
                if leases:
                    missing = await self._call(self._renew(keys=[self._key(slot)], args=[self.ttl, *leases]))
                    if missing:
                        self._new_epoch(slot)  # uncounted leases must not carry more downloads
