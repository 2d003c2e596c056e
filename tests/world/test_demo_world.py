"""Checks that the loopback demo world behaves as each spec promises.

Uses only stdlib clients (urllib, http.client, raw sockets) so a failure here
points at the world, never at Scrapy or the plugin.
"""

from __future__ import annotations

import base64
import configparser
import email.utils
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from demo_world import OriginSpec, ProxySpec, World

from tests.harness.waits import wait_until

Result = tuple[int, dict[str, str], bytes]
AUTH = "Basic " + base64.b64encode(b"user:pass").decode()


@pytest.fixture(autouse=True)
def _no_env_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    # An inherited no_proxy/http_proxy would silently reroute urllib.
    for var in list(os.environ):
        if var.lower().endswith("_proxy"):
            monkeypatch.delenv(var)


@pytest.fixture
def world() -> Iterator[World]:
    w = World()
    yield w
    w.stop()


def fetch(
    url: str,
    proxy: str | None = None,
    timeout: float = 5.0,
    headers: dict[str, str] | None = None,
) -> Result:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy} if proxy else {}))
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with opener.open(req, timeout=timeout) as resp:
            return resp.status, dict(resp.headers.items()), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers.items()), err.read()


def connect_via(proxy_port: int, target: str, auth: str | None = None) -> tuple[socket.socket, bytes]:
    """Send CONNECT on a raw socket; return it and the proxy's response head."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=5)
    extra = f"Proxy-Authorization: {auth}\r\n" if auth else ""
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def test_direct_origin_keepalive_and_counters(world: World) -> None:
    a = world.add_origin("a")
    b = world.add_origin("b", OriginSpec(status_override=404))
    world.start()
    assert a.host == "127.0.0.2" and b.host == "127.0.0.3"
    assert a.url("/page/1") == f"http://127.0.0.2:{a.port}/page/1"
    import http.client

    conn = http.client.HTTPConnection(a.host, a.port, timeout=5)
    for path in ("/page/1", "/page/1", "/page/2"):
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 200
        assert b"a" in body and path.encode() in body
    conn.close()
    assert fetch(b.url("/x"))[0] == 404
    snap = world.snapshot()
    json.dumps(snap)
    assert snap["origins"]["a"]["requests"] == 3
    assert snap["origins"]["a"]["paths"] == {"/page/1": 2, "/page/2": 1}
    assert snap["origins"]["a"]["statuses"] == {"200": 3}
    assert snap["origins"]["b"]["statuses"] == {"404": 1}
    world.reset_counters()
    assert world.snapshot()["origins"]["a"]["requests"] == 0


def test_good_proxy_forwards_and_strips_proxy_authorization(world: World) -> None:
    a = world.add_origin("a")
    good = world.add_proxy("good", ProxySpec(proxy_status=True))
    other = world.add_proxy("other")
    world.start()
    # The client sends credentials to a proxy that does not need them.
    status, headers, body = fetch(a.url("/p"), good.url, headers={"Proxy-Authorization": AUTH})
    assert status == 200 and b"/p" in body
    assert headers["Via"] == "1.1 demo-good"
    assert headers["Proxy-Status"] == "demo-good; received-status=200"
    status, headers, _ = fetch(a.url("/q"), other.url)
    assert status == 200 and "Via" not in headers and "Proxy-Status" not in headers
    snap = world.snapshot()
    assert snap["origins"]["a"]["requests"] == 2
    assert snap["origins"]["a"]["proxy_authorization_seen"] == 0
    assert snap["proxies"]["good"]["forwarded"] == 1
    assert snap["proxies"]["good"]["authorization_values_seen"] == [AUTH]
    assert snap["proxies"]["other"]["authorization_values_seen"] == []


def test_credentials_required(world: World) -> None:
    a = world.add_origin("a")
    auth = world.add_proxy("auth", ProxySpec(credentials=("user", "pass")))
    world.start()
    assert auth.url == f"http://user:pass@127.0.0.1:{auth.port}"
    status, headers, _ = fetch(a.url("/"), auth.bare_url)
    assert status == 407
    assert headers["Proxy-Authenticate"] == 'Basic realm="demo"'
    assert fetch(a.url("/"), f"http://user:wrong@127.0.0.1:{auth.port}")[0] == 407
    status, _, _ = fetch(a.url("/"), auth.url)  # urllib sends Basic from userinfo
    assert status == 200
    sock, head = connect_via(auth.port, a.netloc)
    sock.close()
    assert head.startswith(b"HTTP/1.1 407")
    snap = world.snapshot()
    assert snap["proxies"]["auth"]["auth_failures"] == 3
    assert snap["proxies"]["auth"]["forwarded"] == 1
    assert snap["origins"]["a"]["requests"] == 1
    assert snap["origins"]["a"]["proxy_authorization_seen"] == 0


def test_dead_blackhole_reset(world: World) -> None:
    a = world.add_origin("a")
    dead = world.add_proxy("dead", ProxySpec(mode="dead"))
    hole = world.add_proxy("hole", ProxySpec(mode="blackhole"))
    reset = world.add_proxy("reset", ProxySpec(mode="reset"))
    world.start()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", dead.port), timeout=2).close()
    with pytest.raises(urllib.error.URLError) as excinfo:
        fetch(a.url("/"), dead.url)
    assert isinstance(excinfo.value.reason, ConnectionRefusedError)
    started = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)):
        fetch(a.url("/"), hole.url, timeout=0.5)
    assert time.monotonic() - started < 3
    with pytest.raises((ConnectionError, urllib.error.URLError)):
        fetch(a.url("/"), reset.url)
    snap = world.snapshot()
    assert snap["proxies"]["hole"]["requests"] == 1
    assert snap["proxies"]["reset"]["requests"] == 1
    assert snap["origins"]["a"]["requests"] == 0


def test_bad_gateway_and_flaky_proxies(world: World) -> None:
    a = world.add_origin("a")
    bad = world.add_proxy("bad", ProxySpec(mode="bad_gateway", proxy_status=True))
    flaky = world.add_proxy("flaky", ProxySpec(mode="flaky", flaky_p=0.5, seed=7))
    world.start()
    status, headers, _ = fetch(a.url("/"), bad.url)
    assert status == 502
    assert headers["Proxy-Status"] == "demo-bad; error=destination_unavailable"
    sock, head = connect_via(bad.port, a.netloc)
    sock.close()
    assert head.startswith(b"HTTP/1.1 502")
    statuses = [fetch(a.url(f"/{i}"), flaky.url)[0] for i in range(40)]
    assert set(statuses) == {200, 502}
    snap = world.snapshot()
    assert snap["proxies"]["bad"]["own_errors"] == 2
    assert snap["proxies"]["bad"]["connects"] == 1
    f = snap["proxies"]["flaky"]
    assert f["own_errors"] == statuses.count(502)
    assert f["forwarded"] == statuses.count(200)
    assert snap["origins"]["a"]["requests"] == statuses.count(200)


def test_banned_host(world: World) -> None:
    a = world.add_origin("a")
    b = world.add_origin("b")
    banned = world.add_proxy("banned", ProxySpec(banned_hosts={a.host}))
    world.start()
    assert fetch(a.url("/"), banned.url)[0] == 502
    assert fetch(b.url("/"), banned.url)[0] == 200
    sock, head = connect_via(banned.port, a.netloc)
    sock.close()
    assert head.startswith(b"HTTP/1.1 502")
    snap = world.snapshot()
    assert snap["origins"]["a"]["requests"] == 0
    assert snap["origins"]["b"]["requests"] == 1
    assert snap["proxies"]["banned"]["own_errors"] == 2


def test_capacity_overload(world: World) -> None:
    o = world.add_origin("o", OriginSpec(capacity=2, service_time=0.4))
    world.start()
    results: list[int] = []
    barrier = threading.Barrier(5)

    def hit(i: int) -> None:
        barrier.wait()
        results.append(fetch(o.url(f"/{i}"))[0])

    threads = [threading.Thread(target=hit, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200, 200, 502, 502, 502]
    snap = world.snapshot()["origins"]["o"]
    assert snap["overload"] == 3
    assert snap["max_in_flight"] == 3  # arrivals counted, overloaded included
    assert snap["in_flight"] == 0


def test_retry_after_early(world: World) -> None:
    o = world.add_origin("o", OriginSpec(retry_after=0.5))
    d = world.add_origin("d", OriginSpec(retry_after=0.5, retry_after_date=True))
    world.start()
    status, headers, _ = fetch(o.url("/r"))
    assert (status, headers["Retry-After"]) == (503, "1")
    status, headers, _ = fetch(o.url("/r"))
    assert (status, headers["Retry-After"]) == (503, "1")
    assert fetch(o.url("/other"))[0] == 503  # the deadline is per path
    status, headers, _ = fetch(d.url("/r"))
    when = email.utils.parsedate_to_datetime(headers["Retry-After"]).timestamp()
    assert status == 503 and time.time() < when <= time.time() + 2
    time.sleep(0.6)  # past both deadlines (0.5 s): time passing is the condition, a late wake-up is fine
    assert fetch(o.url("/r"))[0] == 200
    assert fetch(d.url("/r"))[0] == 200
    snap = world.snapshot()["origins"]
    assert snap["o"]["early"] == 1 and snap["d"]["early"] == 0
    assert snap["o"]["statuses"] == {"503": 3, "200": 1}


def test_fail_for_seconds_window(world: World) -> None:
    # A window of 2 s: the two fetches inside it fit in it also on a loaded machine.
    o = world.add_origin("o", OriginSpec(fail_for_seconds=2.0))
    world.start()
    time.sleep(0.6)  # nothing asked for a while: the window opens at the first request, not at start
    assert fetch(o.url("/1"))[0] == 502
    assert fetch(o.url("/2"))[0] == 502
    time.sleep(2.1)
    assert fetch(o.url("/3"))[0] == 200
    world.reset_counters(state=True)  # forgets the window: storms again
    assert fetch(o.url("/4"))[0] == 502


def test_https_through_connect(world: World) -> None:
    s = world.add_origin("s", OriginSpec(tls=True))
    proxy = world.add_proxy("auth", ProxySpec(credentials=("user", "pass")))
    world.start()
    assert s.url("/x").startswith("https://127.0.0.2:")
    assert world.tls_ca is not None
    sock, head = connect_via(proxy.port, s.netloc, AUTH)
    assert head.startswith(b"HTTP/1.1 200")
    ctx = ssl.create_default_context(cafile=world.tls_ca)  # verifies the IP SAN
    with ctx.wrap_socket(sock, server_hostname=s.host) as tls:
        tls.sendall(f"GET /secure HTTP/1.1\r\nHost: {s.netloc}\r\n\r\n".encode())
        data = b""
        while b"</html>" not in data:
            chunk = tls.recv(4096)
            assert chunk
            data += chunk
    assert data.startswith(b"HTTP/1.1 200") and b"/secure" in data
    snap = world.snapshot()
    assert snap["proxies"]["auth"]["connects"] == 1
    assert snap["proxies"]["auth"]["forwarded"] == 1
    assert snap["origins"]["s"]["paths"] == {"/secure": 1}


def test_down_toggle_and_socket_stop_start(world: World) -> None:
    o = world.add_origin("o")
    proxy = world.add_proxy("p", ProxySpec(proxy_status=True))
    world.start()
    world.set_origin_down("o", True)
    assert fetch(o.url("/"))[0] == 502
    world.set_origin_down("o", False)
    assert fetch(o.url("/"))[0] == 200
    port = o.port
    o.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection((o.host, port), timeout=2).close()
    status, headers, _ = fetch(o.url("/"), proxy.url)
    assert status == 502
    assert headers["Proxy-Status"] == "demo-p; error=connection_refused"
    o.start()
    assert o.port == port
    assert fetch(o.url("/"))[0] == 200
    world.set_proxy_mode("p", "dead")
    with pytest.raises(urllib.error.URLError):
        fetch(o.url("/"), proxy.url)
    world.set_proxy_mode("p", "good")
    assert fetch(o.url("/"), proxy.url)[0] == 200


def test_stop_counts_the_connections_it_cuts(world: World) -> None:
    # A crash may take an answer the origin has already counted with it: `aborted` says how many
    # connections it cut (tests/real/test_nginx.py allows for that many answers served twice).
    o = world.add_origin("o", OriginSpec(service_time=5.0))
    world.start()
    held = socket.create_connection((o.host, o.port), timeout=5)
    held.sendall(f"GET /slow HTTP/1.1\r\nHost: {o.netloc}\r\n\r\n".encode())
    wait_until(lambda: world.snapshot()["origins"]["o"]["in_flight"] == 1, "the request is being served")
    assert world.snapshot()["origins"]["o"]["aborted"] == 0
    o.stop()
    assert world.snapshot()["origins"]["o"]["aborted"] == 1
    try:
        answer = held.recv(1024)
    except ConnectionResetError:  # an abort may reset the connection rather than close it
        answer = b""
    assert answer == b""  # cut, not answered
    held.close()


def raw_exchange(port: int, payload: bytes, host: str = "127.0.0.1") -> bytes:
    """Send raw bytes, read until the peer closes (or goes quiet for a second)."""
    with socket.create_connection((host, port), timeout=1) as sock:
        sock.sendall(payload)
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass
        return data


def test_proxy_framing_keepalive_head_and_body(world: World) -> None:
    a = world.add_origin("a", OriginSpec(body_bytes=300))
    proxy = world.add_proxy("p")
    world.start()
    get = f"GET {a.url('/k')} HTTP/1.1\r\nHost: {a.netloc}\r\n\r\n"
    head = f"HEAD {a.url('/h')} HTTP/1.1\r\nHost: {a.netloc}\r\n\r\n"
    post = f"POST {a.url('/post')} HTTP/1.1\r\nHost: {a.netloc}\r\nTransfer-Encoding: chunked\r\n"
    post += "Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
    data = raw_exchange(proxy.port, (get + head + post).encode())  # pipelined on one connection
    answers = data.split(b"HTTP/1.1 ")[1:]
    assert [x[:3] for x in answers] == [b"200", b"200", b"200"]
    assert answers[0].endswith(b"</body></html>\n") and b"Content-Length: 300\r\n" in answers[0]
    # HEAD: the origin's Content-Length, no body.
    assert b"Content-Length: 300\r\n" in answers[1] and answers[1].endswith(b"\r\n\r\n")
    assert answers[2].split(b"\r\n\r\n")[0].endswith(b"Connection: close")
    snap = world.snapshot()
    assert snap["origins"]["a"]["paths"] == {"/k": 1, "/h": 1, "/post": 1}
    assert snap["proxies"]["p"]["forwarded"] == 3


def test_malformed_modes_send_exact_bytes(world: World) -> None:
    a = world.add_origin("a", OriginSpec(body_bytes=300))
    modes = ["garbage", "status_only", "huge_headers", "truncate"]
    proxies = {m: world.add_proxy(m, ProxySpec(mode=m)) for m in modes}  # type: ignore[arg-type]
    world.start()
    get = f"GET {a.url('/m')} HTTP/1.1\r\nHost: {a.netloc}\r\n\r\n".encode()
    got = {m: raw_exchange(p.port, get) for m, p in proxies.items()}
    assert got["garbage"] == b"\x16\x03\x01\x00\xa5 this is not HTTP \x00\xff\r\n\r\n"
    assert got["status_only"] == b"HTTP/1.1 200 OK\r\n"
    assert len(got["huge_headers"]) > 256 * 1024 and got["huge_headers"].endswith(b"\r\n\r\nok")
    head, _, body = got["truncate"].partition(b"\r\n\r\n")
    assert b"Content-Length: 300\r\n" in head + b"\r\n" and len(body) == 150


def test_proxy_host_is_a_choice(world: World) -> None:
    a = world.add_origin("a")
    proxy = world.add_proxy("p", host="127.0.0.9")
    world.start()
    assert proxy.url == f"http://127.0.0.9:{proxy.port}"
    assert fetch(a.url("/"), proxy.url)[0] == 200


def test_survives_clients_vanishing(world: World) -> None:
    o = world.add_origin("o", OriginSpec(slow=0.2))
    s = world.add_origin("s", OriginSpec(tls=True))
    proxy = world.add_proxy("p")
    world.start()
    for host, port, payload in [
        (o.host, o.port, b"GET / HTTP/1.1\r\nHo"),  # half a head
        (o.host, o.port, b"GET / HTTP/1.1\r\n\r\n"),  # gone before the answer
        (s.host, s.port, b"\x16\x03\x01garbage"),  # broken TLS handshake
        # (HTTP/1.1 requires Host: the proxies' h11 drops a request without one, as it should)
        ("127.0.0.1", proxy.port, f"GET {o.url('/')} HTTP/1.1\r\nHost: {o.netloc}\r\n\r\n".encode()),
        ("127.0.0.1", proxy.port, f"CONNECT {o.netloc} HTTP/1.1\r\nHost: {o.netloc}\r\n\r\n".encode()),
        ("127.0.0.1", proxy.port, b"NONSENSE\r\n\r\n"),
    ]:
        sock = socket.create_connection((host, port), timeout=2)
        sock.sendall(payload)
        sock.close()

    def finished_with_them() -> bool:  # the slow answers written (or dropped) for clients that had gone
        snap = world.snapshot()
        origin, forwarder = snap["origins"]["o"], snap["proxies"]["p"]
        # aiohttp may never start a handler for a client gone before its request was read: the
        # proxied GET is the one request the origin is sure to see.
        return origin["requests"] >= 1 and origin["in_flight"] == 0 and forwarder["forwarded"] == 2

    wait_until(finished_with_them, "the servers have answered the vanished clients")
    assert fetch(o.url("/after"))[0] == 200
    assert fetch(o.url("/after"), proxy.url)[0] == 200


def test_cli_scenario_demo(tmp_path: Path) -> None:
    # demo_world is installed with the project: no PYTHONPATH, and any working directory will do.
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy") and k != "PYTHONPATH"}
    with subprocess.Popen(
        [sys.executable, "-m", "demo_world", "--scenario", "demo"],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            info = json.loads(proc.stdout.readline())
            assert set(info["origins"]) == {"shop", "news", "slow"}
            assert info["tls_ca"] is None
            assert info["proxies"]["auth"].startswith("http://user:pass@127.0.0.1:")
            shop, news = info["origins"]["shop"], info["origins"]["news"]
            assert fetch(shop + "/p", info["proxies"]["good1"])[0] == 200
            assert fetch(shop + "/p", info["proxies"]["banned_shop"])[0] == 502
            assert fetch(news + "/p", info["proxies"]["auth"])[0] == 502
            proc.stdin.write("snapshot\n")
            proc.stdin.flush()
            polled = json.loads(proc.stdout.readline())
            assert polled["origins"]["shop"]["requests"] == 1
            proc.stdin.close()  # EOF: the world stops and reports
            final = json.loads(proc.stdout.readline())
            assert proc.wait(10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
    assert final["origins"]["news"]["statuses"] == {"502": 1}
    assert final["proxies"]["auth"]["forwarded"] == 1
    assert final["origins"]["news"]["proxy_authorization_seen"] == 0


def test_the_plugins_wheel_ships_no_test_scaffolding() -> None:
    # demo_world is its own distribution (example_project/pyproject.toml), installed for the demo
    # and the tests only; the plugin's package list must not reach it.
    root = Path(__file__).resolve().parents[2]
    config = configparser.ConfigParser()
    config.read(root / "setup.cfg")
    assert config["options.packages.find"]["include"].split(", ") == ["scrapy_gateway", "scrapy_gateway.*"]
    assert "demo_world" not in config["options"].get("install_requires", "")
