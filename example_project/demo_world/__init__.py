"""demo_world: loopback HTTP origins and forward proxies for tests and demos.

    with World() as world: ...   # or world.start() / world.stop()

Origins bind 127.0.0.2, 127.0.0.3, ... (one IP each, so clients see distinct
hosts); proxies bind 127.0.0.1 unless add_proxy(..., host=) says otherwise.
Ports are OS-assigned at start(). Everything runs on one asyncio loop in a
daemon thread; handle methods are thread-safe. Scheduled failures
(ProxySpec.outage, OriginSpec.closed_for_seconds) count from the world's first
request, one clock for all (snapshot()["epoch"]).

Built on aiohttp's low-level server (origins), h11 (the proxies' HTTP/1.1
framing) and trustme (certificates of TLS origins). Installed with the
scrapy-gateway project (see setup.cfg), so `import demo_world` and
`python -m demo_world` work from any folder.
"""

from .origin import Origin, OriginSpec
from .proxy import MODES, Mode, Proxy, ProxySpec
from .scenarios import SCENARIOS, build
from .world import World

__all__ = [
    "MODES",
    "SCENARIOS",
    "Mode",
    "Origin",
    "OriginSpec",
    "Proxy",
    "ProxySpec",
    "World",
    "build",
]
