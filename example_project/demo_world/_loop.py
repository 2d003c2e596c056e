"""The world's private event loop, running in a daemon thread.

A separate loop (rather than the caller's) lets the world serve a Scrapy crawl
that blocks the main thread in Twisted's reactor, or plain blocking urllib.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

log = logging.getLogger("demo_world")


def _quiet(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    # Peers vanishing mid-handshake or mid-write are the point of this world;
    # asyncio's default handler would print each as an ERROR with a traceback.
    log.debug("asyncio: %s", context.get("message"), exc_info=context.get("exception"))


class LoopThread:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> None:
        if self._thread is not None:
            return
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_quiet)
        ready = threading.Event()

        def main() -> None:
            asyncio.set_event_loop(loop)
            loop.call_soon(ready.set)
            loop.run_forever()

        self.loop = loop
        self._thread = threading.Thread(target=main, name="demo-world", daemon=True)
        self._thread.start()
        ready.wait()

    def _in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run a coroutine on the world loop and wait for it (from another thread)."""
        if self.loop is None:
            coro.close()
            raise RuntimeError("the world is not started")
        if self._in_loop_thread():
            coro.close()
            raise RuntimeError("blocking call from the world's own loop would deadlock")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T]) -> T:
        """Call fn where the counters live, so it never sees a dict mid-update."""
        if self.loop is None or self._in_loop_thread():
            return fn()

        async def invoke() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(invoke(), self.loop).result(30.0)

    def stop(self) -> None:
        loop, thread = self.loop, self._thread
        if loop is None or thread is None:
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await loop.shutdown_asyncgens()

        try:
            asyncio.run_coroutine_threadsafe(drain(), loop).result(10.0)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10.0)
            loop.close()
            self.loop = None
            self._thread = None
