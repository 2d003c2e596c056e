"""World: a set of origins and proxies served from one background loop."""

from __future__ import annotations

import ipaddress
import shutil
import ssl
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trustme

from ._epoch import Epoch
from ._loop import LoopThread
from .origin import Origin, OriginSpec
from .proxy import Mode, Proxy, ProxySpec

# 127.0.0.1 is the proxies'; each origin gets its own address after it so a
# crawler sees distinct hosts (per-domain slots, bans) without DNS tricks.
_FIRST_ORIGIN_IP = ipaddress.IPv4Address("127.0.0.2")


class _CertAuthority:
    """A throw-away CA (trustme) issuing one leaf certificate per TLS origin IP, so clients that do
    verify trust every origin, added later or not, with a single file."""

    def __init__(self) -> None:
        self._ca = trustme.CA()  # ECDSA keys: microseconds, where RSA would add ~100 ms per origin
        self._dir = Path(tempfile.mkdtemp(prefix="demo-world-tls-"))
        self.ca_path = self._dir / "ca.pem"
        self._ca.cert_pem.write_to_path(str(self.ca_path))

    def server_context(self, ip: str) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ca.issue_cert(ip).configure_cert(ctx)  # an IP address becomes an IP SAN
        return ctx

    def cleanup(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


class World:
    def __init__(self) -> None:
        self._loop = LoopThread()
        self.origins: dict[str, Origin] = {}
        self.proxies: dict[str, Proxy] = {}
        self._ca: _CertAuthority | None = None
        self._epoch = Epoch()  # shared by all: scheduled outages count from the world's first request

    # -- building -------------------------------------------------------------
    def add_origin(self, name: str, spec: OriginSpec | None = None) -> Origin:
        if name in self.origins:
            raise ValueError(f"duplicate origin {name!r}")
        host = str(_FIRST_ORIGIN_IP + len(self.origins))
        origin = Origin(name, spec or OriginSpec(), host, self._loop, self._epoch)
        self.origins[name] = origin
        if self.running:
            self._loop.run(self._start_origin(origin))
        return origin

    def add_proxy(self, name: str, spec: ProxySpec | None = None, *, host: str = "127.0.0.1") -> Proxy:
        if name in self.proxies:
            raise ValueError(f"duplicate proxy {name!r}")
        proxy = Proxy(name, spec or ProxySpec(), self._loop, host, self._epoch)
        self.proxies[name] = proxy
        if self.running:
            self._loop.run(proxy._start())
        return proxy

    def origin(self, name: str) -> Origin:
        return self.origins[name]

    def proxy(self, name: str) -> Proxy:
        return self.proxies[name]

    # -- lifecycle --------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._loop.running

    @property
    def tls_ca(self) -> str | None:
        """PEM file of the CA that signed every TLS origin's cert (None: no TLS)."""
        return str(self._ca.ca_path) if self._ca else None

    def start(self) -> Self:
        if self.running:
            return self
        self._loop.start()
        try:
            self._loop.run(self._start_all())
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.running:
            try:
                self._loop.run(self._stop_all())
            finally:
                self._loop.stop()
        if self._ca is not None:
            self._ca.cleanup()
            self._ca = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    async def _start_origin(self, origin: Origin) -> None:
        ctx = None
        if origin.spec.tls:
            if self._ca is None:
                self._ca = _CertAuthority()
            ctx = self._ca.server_context(origin.host)
        await origin._start(ctx)

    async def _start_all(self) -> None:
        for origin in self.origins.values():
            await self._start_origin(origin)
        for proxy in self.proxies.values():
            await proxy._start()

    async def _stop_all(self) -> None:
        for origin in self.origins.values():
            await origin._stop()
        for proxy in self.proxies.values():
            await proxy._stop()

    # -- run-time control and counters ----------------------------------------
    def set_origin_down(self, name: str, down: bool = True) -> None:
        self.origins[name].set_down(down)

    def set_proxy_mode(self, name: str, mode: Mode) -> None:
        self.proxies[name].set_mode(mode)

    def snapshot(self) -> dict[str, Any]:
        """All counters as plain JSON-serialisable data, read on the world loop."""
        return self._loop.call(
            lambda: {
                "origins": {n: o.snapshot() for n, o in self.origins.items()},
                "proxies": {n: p.snapshot() for n, p in self.proxies.items()},
                # time.monotonic() of the world's first request (None before it): the clock of
                # ProxySpec.outage and OriginSpec.closed_for_seconds. Comparable across processes.
                "epoch": self._epoch.at,
            }
        )

    def reset_counters(self, *, state: bool = False) -> None:
        """Zero counters; state=True also forgets storm windows, Retry-After
        deadlines and the world's epoch (the next request starts a new one)."""

        def reset() -> None:
            for origin in self.origins.values():
                origin.reset(state=state)
            for proxy in self.proxies.values():
                proxy.reset(state=state)
            if state:
                self._epoch.reset()

        self._loop.call(reset)

    def describe(self) -> dict[str, Any]:
        """What a client needs: base URLs of origins, proxy URLs, CA file."""
        return {
            "origins": {n: o.base_url for n, o in self.origins.items()},
            "proxies": {n: p.url for n, p in self.proxies.items()},
            "tls_ca": self.tls_ca,
        }
