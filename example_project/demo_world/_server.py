"""A listening socket that remembers its connections so it can sever them."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

from ._http import PEER_ERRORS

log = logging.getLogger("demo_world")

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Listener:
    """One bound host:port. stop() closes the socket AND live connections,
    because a crashed server would drop keep-alive clients too; start() again
    re-binds the same port so URLs handed out earlier stay valid."""

    def __init__(self, host: str, handler: Handler) -> None:
        self.host = host
        self.port = 0
        self._handler = handler
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = {}

    @property
    def listening(self) -> bool:
        return self._server is not None

    async def start(self, ssl_ctx: ssl.SSLContext | None = None) -> int:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._on_connect,
                self.host,
                self.port,
                ssl=ssl_ctx,
                backlog=1024,
                reuse_address=True,
                ssl_handshake_timeout=5.0 if ssl_ctx else None,
            )
            self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        tasks = [t for t in self._conns.values() if t is not None]
        for writer in list(self._conns):
            writer.transport.abort()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns[writer] = asyncio.current_task()
        try:
            await self._handler(reader, writer)
        except PEER_ERRORS:
            pass
        except asyncio.CancelledError:
            pass  # stop() severing us; the task ends here either way
        except Exception:  # a bug in a handler must not take the world down
            log.debug("handler crashed", exc_info=True)
        finally:
            self._conns.pop(writer, None)
            writer.close()
