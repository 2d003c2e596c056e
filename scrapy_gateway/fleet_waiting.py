"""Waiting retries that outlive their process, in Redis (with `GATEWAY_STATE = "redis://..."`).

A retry parked in the waiting room (parking.py) is also written to Redis: its request, serialized
as Scrapy's JOBDIR and scrapy-redis queues do (`Request.to_dict`, pickled), in the hash
`<prefix>:waiting:<spider>:data`, and its due time (epoch seconds) in the sorted set
`<prefix>:waiting:<spider>`, owned by this process. It is removed when the room hands it back.
Each process keeps a key `<prefix>:alive:<token>` that expires GATEWAY_LEASE_TTL after its last
renewal, and deletes it when it closes. A process that starts, and every running one once a
second, adopts the entries of owners that are gone: the retries of a process killed with SIGKILL,
or stopped, wait out the rest of their time in whichever process of the fleet runs next, and
their pages arrive. A closing process leaves its waiting retries there instead of sending them to
their errbacks.

What is not in Redis (written while it was lost, or not yet confirmed) follows the room's own
rules at close. An owner that stalls for longer than the TTL may see its retries adopted by
another process as well: the page is then fetched twice, never lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any
from weakref import WeakKeyDictionary

from scrapy.utils.request import request_from_dict

from scrapy_gateway.meta import attempt_of

if TYPE_CHECKING:
    from scrapy import Request, Spider

    from scrapy_gateway.fleet import FleetLeases

logger = logging.getLogger("scrapy_gateway")

ADOPT_EVERY = 1.0  # seconds between looks for the waiting retries of processes that are gone

# KEYS: the due-time set, the data hash. ARGV: this process's token, the alive keys' prefix, most
# entries to take. A flat list: id, data, id, data, ...
_ADOPT = """
local out = {}
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, 4999)) do
  local owner = redis.call('HGET', KEYS[2], id .. ':owner')
  if owner ~= ARGV[1] and (not owner or redis.call('EXISTS', ARGV[2] .. owner) == 0) then
    local data = redis.call('HGET', KEYS[2], id)
    if data then
      redis.call('HSET', KEYS[2], id .. ':owner', ARGV[1])
      table.insert(out, id)
      table.insert(out, data)
      if #out >= tonumber(ARGV[3]) * 2 then
        break
      end
    else
      redis.call('ZREM', KEYS[1], id)
    end
  end
end
return out
"""


class SharedWaiting:
    def __init__(self, fleet: FleetLeases, spider_name: str) -> None:
        self.fleet = fleet
        base = f"{fleet.prefix}:waiting:{spider_name}"
        self._due_key, self._data_key = base, f"{base}:data"
        self._alive_prefix = f"{fleet.prefix}:alive:"
        self._numbers = itertools.count()
        self._ids: WeakKeyDictionary[Request, str] = WeakKeyDictionary()
        self._stored: set[str] = set()  # ids Redis has confirmed
        self._adopt: Any = None
        self._unshareable_told = False
        self._writes: dict[str, asyncio.Future[None]] = {}  # entry -> its last write, in flight
        self._orphans: set[str] = set()  # entries handed back while Redis was lost
        self._live: set[str] = set()  # entries of requests waiting here now

    @property
    def _alive_key(self) -> str:
        return f"{self._alive_prefix}{self.fleet.token}"

    async def start(self) -> None:
        self._adopt = self.fleet.client.register_script(_ADOPT)
        await self.keep_alive()

    async def keep_alive(self) -> None:
        ttl_ms = int(self.fleet.ttl * 1000)
        await self.fleet.call(self.fleet.client.set(self._alive_key, 1, px=ttl_ms))

    # -- the room's side ---------------------------------------------------------------------
    #
    # Every write of an entry waits for the one before it (`_writes`), so that its removal never
    # reaches Redis before its storing; `_stored` holds the entries Redis has confirmed.

    def park(self, request: Request, spider: Spider, *, entry: str | None = None) -> None:
        """The room keeps `request` until its attempt's `not_before`: keep it in Redis too."""
        attempt = attempt_of(request.meta)
        if not self.fleet.shared or attempt is None or attempt.not_before is None:
            return
        try:
            data = pickle.dumps(request.to_dict(spider=spider), protocol=4)
        except (ValueError, TypeError, AttributeError, pickle.PicklingError) as exc:
            # A callback that is not the spider's method, or meta that does not pickle: it waits
            # in this process only, as without a Redis state (a JOBDIR could not keep it either).
            if not self._unshareable_told:
                self._unshareable_told = True
                logger.warning(
                    "scrapy-gateway: a waiting retry cannot be kept in Redis (%(error)s); such retries "
                    "wait in this process only",
                    {"error": exc.__class__.__name__},
                )
            return
        entry = entry or self._ids.get(request) or f"{self.fleet.token}:w{next(self._numbers)}"
        self._ids[request] = entry
        self._live.add(entry)
        self._write(entry, self._store(entry, data, attempt.not_before))

    def _write(self, entry: str, command: Coroutine[Any, Any, None]) -> None:
        before = self._writes.get(entry)

        async def in_order() -> None:
            if before is not None:
                await asyncio.gather(before, return_exceptions=True)
            await command

        task = asyncio.ensure_future(in_order())
        self._writes[entry] = task
        task.add_done_callback(lambda done: self._writes.pop(entry, None) if self._writes.get(entry) is done else None)
        self.fleet.track(task)

    async def _store(self, entry: str, data: bytes, due: float) -> None:
        client = self.fleet.client
        pipe = client.pipeline(transaction=True)
        pipe.hset(self._data_key, mapping={entry: data, f"{entry}:owner": self.fleet.token})
        pipe.zadd(self._due_key, {entry: due})
        if await self.fleet.call(pipe.execute()) is not None and entry in self._live:
            self._stored.add(entry)

    async def _remove(self, entry: str) -> None:
        client = self.fleet.client
        pipe = client.pipeline(transaction=True)
        pipe.zrem(self._due_key, entry)
        pipe.hdel(self._data_key, entry, f"{entry}:owner")
        if await self.fleet.call(pipe.execute()) is None:
            self._orphans.add(entry)  # removed once Redis answers again

    def unpark(self, request: Request) -> None:
        """The room handed `request` back (or ended it): it waits nowhere any more."""
        entry = self._ids.pop(request, None)
        if entry is None:
            return
        self._stored.discard(entry)
        self._live.discard(entry)
        if not self.fleet.shared:
            self._orphans.add(entry)
            return
        self._write(entry, self._remove(entry))

    def kept(self, request: Request) -> bool:
        """Whether Redis holds `request` for the fleet (so the room need not end it at close)."""
        entry = self._ids.get(request)
        return self.fleet.shared and entry is not None and entry in self._stored

    def rejoined(self, spider: Spider | None, waiting: list[Request]) -> None:
        """Redis answers again, perhaps restarted empty: store again what waits here (`waiting`,
        the room's, also what was parked meanwhile), and remove what was handed back meanwhile."""
        self._stored.clear()
        orphans, self._orphans = self._orphans, set()
        for entry in orphans:
            self._write(entry, self._remove(entry))
        if spider is not None:
            for request in waiting:
                self.park(request, spider)

    def forget(self, requests: list[Request]) -> None:
        """Adopted but not scheduled (the crawl is closing): left in Redis as they are."""
        for request in requests:
            entry = self._ids.pop(request, None)
            if entry is not None:
                self._stored.discard(entry)
                self._live.discard(entry)

    async def leave(self) -> None:
        """Closing: the fleet may take what this process leaves waiting, now."""
        if self.fleet.client is None:
            return  # Redis never answered at start-up (the crawl closes for it): nothing to leave
        await self.fleet.call(self.fleet.client.delete(self._alive_key))

    # -- adoption ----------------------------------------------------------------------------

    async def adopt(self, spider: Spider, most: int = 1000) -> list[Request]:
        """The waiting retries of processes that are gone, now this process's."""
        if not self.fleet.shared or self._adopt is None:
            return []
        found = await self.fleet.call(
            self._adopt(keys=[self._due_key, self._data_key], args=[self.fleet.token, self._alive_prefix, most])
        )
        requests = []
        pairs = list(found or [])
        for entry_raw, data in zip(pairs[0::2], pairs[1::2], strict=True):
            entry = entry_raw.decode() if isinstance(entry_raw, bytes) else str(entry_raw)
            try:
                request = request_from_dict(pickle.loads(data), spider=spider)  # the fleet's own entries
            except Exception:  # an entry of another version, or a spider changed since: dropped, said
                logger.warning("scrapy-gateway: a waiting retry left by another process could not be read: dropped")
                self._write(entry, self._remove(entry))
                continue
            self._ids[request] = entry
            self._live.add(entry)
            self._stored.add(entry)
            requests.append(request)
        if requests:
            logger.info(
                "scrapy-gateway: took over %(n)d waiting retries left by processes that are gone",
                {"n": len(requests)},
            )
        return requests
