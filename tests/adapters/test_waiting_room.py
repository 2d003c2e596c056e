"""The waiting room on its own: what it holds, when it lets go, and what happens at close."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
from scrapy import Request
from scrapy.exceptions import IgnoreRequest
from twisted.python.failure import Failure

from scrapy_gateway.core.attempt import Attempt
from scrapy_gateway.errors import RetryCancelled
from scrapy_gateway.meta import ATTEMPT, attempt_of
from tests.adapters.conftest import Rig


class StubEngine:
    """What the room touches of the engine: crawl(), the scraper, the scheduler."""

    def __init__(self) -> None:
        self.spider = object()
        self._slot = self  # the engine slot: `closing` is set once the spider starts closing
        self.closing: object | None = None
        self.crawled: list[Request] = []
        self.scraped: list[tuple[Any, Request]] = []
        self.scheduler = self
        self.scraper = self
        self.enqueued: list[Request] = []

    def crawl(self, request: Request) -> None:
        self.crawled.append(request)

    def enqueue_scrape(self, result: Any, request: Request) -> None:
        self.scraped.append((result, request))

    def enqueue_request(self, request: Request) -> bool:
        self.enqueued.append(request)
        return True


def waiting(rig: Rig, seconds: float, *, scheduled: bool = False) -> Request:
    request = Request("http://shop.example/p/1")
    request.meta[ATTEMPT] = Attempt(5, 10, not_before=rig.clock.wall_now + seconds, scheduled=scheduled)
    return request


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_a_request_due_later_is_kept_out_of_the_scheduler_and_released_on_time(rig: Callable[..., Rig]) -> None:
    r = rig()
    engine = r.crawler.engine = StubEngine()  # type: ignore[assignment]
    room = r.runtime.room

    async def scenario() -> None:
        request = waiting(r, 0.05)
        with pytest.raises(IgnoreRequest):
            room._on_scheduled(request)
        assert len(room) == 1 and room.can_park(request) and not room.can_park(Request("http://other.example/"))
        while not engine.crawled:
            await asyncio.sleep(0.01)  # the room's own timer, on the running loop
        released = engine.crawled[0]
        assert released is request and len(room) == 0
        attempt = attempt_of(released.meta)
        assert attempt is not None and attempt.not_before is None

    run(scenario())


def test_a_request_due_now_passes_and_is_known_to_the_scheduler(rig: Callable[..., Rig]) -> None:
    r = rig()
    room = r.runtime.room
    request = waiting(r, 0.0)
    room._on_scheduled(request)  # no exception: it goes on to the scheduler
    assert room.can_park(request) and len(room) == 0
    first = Request("http://shop.example/p/2")
    room._on_scheduled(first)  # a first attempt carries no record, and gets none here
    assert ATTEMPT not in first.meta


def test_close_without_jobdir_sends_waiting_requests_to_their_errbacks(rig: Callable[..., Rig]) -> None:
    r = rig()
    engine = r.crawler.engine = StubEngine()  # type: ignore[assignment]
    room = r.runtime.room

    async def scenario() -> None:
        requests = [waiting(r, 60.0) for _ in range(3)]
        for request in requests:
            with pytest.raises(IgnoreRequest):
                room._on_scheduled(request)
        in_place = asyncio.ensure_future(room.wait_here(waiting(r, 60.0)))
        await asyncio.sleep(0.01)
        assert len(room) == 4
        engine.closing = object()  # "Closing spider": waits in place stop at their next look
        with pytest.raises(RetryCancelled):
            await in_place
        room.flush()
        assert [req for _, req in engine.scraped] == requests
        assert all(isinstance(result, Failure) and result.check(RetryCancelled) for result, _ in engine.scraped)
        assert len(room) == 0

    run(scenario())
    assert r.stat("gateway/waiting/cancelled") == 4


def test_a_timer_that_fires_while_the_spider_closes_leaves_the_request_to_flush(rig: Callable[..., Rig]) -> None:
    r = rig()
    engine = r.crawler.engine = StubEngine()  # type: ignore[assignment]
    room = r.runtime.room
    request = waiting(r, 60.0)

    async def scenario() -> None:
        with pytest.raises(IgnoreRequest):
            room._on_scheduled(request)
        engine.closing = object()
        room._release(request)  # the timer fired: the scheduler will not be drained again

    run(scenario())
    assert engine.crawled == [] and len(room) == 1
    room.flush()
    assert [req for _, req in engine.scraped] == [request]


def test_close_with_jobdir_persists_waiting_requests_marked_to_come_back_through_the_scheduler(
    rig: Callable[..., Rig], tmp_path: Any
) -> None:
    r = rig(JOBDIR=str(tmp_path))
    engine = r.crawler.engine = StubEngine()  # type: ignore[assignment]
    room = r.runtime.room

    async def scenario() -> None:
        request = waiting(r, 60.0)
        with pytest.raises(IgnoreRequest):
            room._on_scheduled(request)
        room.flush()

    run(scenario())
    [saved] = engine.enqueued
    attempt = attempt_of(saved.meta)
    assert attempt is not None and attempt.scheduled and attempt.not_before is not None
    assert r.stat("gateway/waiting/persisted") == 1
    # On resume the request comes out of the disk queue as a new object: it can be parked again.
    import pickle

    from scrapy.utils.request import request_from_dict

    resumed = request_from_dict(pickle.loads(pickle.dumps(saved.to_dict())))
    assert r.runtime.room.can_park(resumed)


def test_an_attempt_record_survives_the_jobdir_queue_pickle() -> None:
    import pickle

    from scrapy.utils.request import request_from_dict

    request = Request("http://shop.example/", meta={ATTEMPT: Attempt(5, 10, retries=2, tried=("a",), not_before=5.0)})
    copy = request_from_dict(pickle.loads(pickle.dumps(request.to_dict())))
    assert copy.meta[ATTEMPT] == request.meta[ATTEMPT]


def test_off_the_schedulers_path_a_retry_waits_in_fetch_holding_no_downloader_place(rig: Callable[..., Rig]) -> None:
    from scrapy.utils.defer import maybe_deferred_to_future

    from scrapy_gateway import GatewayDownloader

    r = rig()
    engine = r.crawler.engine = StubEngine()  # type: ignore[assignment]
    downloader = GatewayDownloader(r.crawler)
    request = waiting(r, 60.0)  # never scheduled: engine.download_async's path

    async def scenario() -> None:
        fetched = downloader.fetch(request)
        await asyncio.sleep(0.01)
        assert not fetched.called and request not in downloader.active and len(r.runtime.room) == 1
        engine.closing = object()
        with pytest.raises(RetryCancelled):
            await maybe_deferred_to_future(fetched)

    run(scenario())
    downloader.close()


def test_a_gate_closing_wakes_the_backoffs_of_its_scope_but_not_a_retry_after(rig: Callable[..., Rig]) -> None:
    r = rig()
    engine = r.crawler.engine = StubEngine()  # type: ignore[assignment]
    room = r.runtime.room

    async def scenario() -> None:
        guessed, told, elsewhere = waiting(r, 30.0), waiting(r, 30.0), Request("http://news.example/p/1")
        told.meta[ATTEMPT] = replace(attempt_of(told.meta), told_to_wait=True)
        elsewhere.meta[ATTEMPT] = Attempt(5, 10, not_before=r.clock.wall_now + 30.0)
        for request in (guessed, told, elsewhere):
            with pytest.raises(IgnoreRequest):
                room._on_scheduled(request)
        room.release("shop.example")  # the shop's gate closed: it answers again
        assert engine.crawled == [guessed]  # its stale backoff is over; Retry-After and news still wait
        room.release("*")  # the provider's gate: every domain's guessed backoffs
        assert engine.crawled == [guessed, elsewhere] and len(room) == 1
        room.flush()

    run(scenario())


def test_a_request_held_by_a_pending_gate_waits_on_a_timer_instead_of_spinning(rig: Callable[..., Rig]) -> None:
    import random

    r = rig()
    r.crawler.engine = StubEngine()  # type: ignore[assignment]
    room, gates, now = r.runtime.room, r.runtime.core.gates, r.clock.monotonic()
    for path in "abcde":  # the domain never worked: five failures through five paths, quiet time not over
        gates.failure("shop.example", path, now, random.Random(1), paths_needed=3)
    assert gates.pending("shop.example", now) and not gates.is_open("shop.example")

    async def scenario() -> None:
        request = waiting(r, 0.1)
        request.meta[ATTEMPT] = replace(attempt_of(request.meta), held="shop.example")
        with pytest.raises(IgnoreRequest):  # parked until its recheck, not handed straight back
            room._on_scheduled(request)
        assert len(room) == 1
        room.flush()

    run(scenario())
