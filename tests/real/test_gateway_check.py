"""`scrapy gateway-check` against real squid and nginx, and a port nobody listens on, in front of
demo world origins: which path each failure is blamed on, and what the command prints.

The command runs in this process (its Command class, as scrapy.cmdline drives it), except for the
tests of the installed `scrapy gateway-check` itself, which run it as a subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from demo_world import OriginSpec, ProxySpec, World
from scrapy.settings import Settings

from scrapy_gateway.commands.check import Command
from tests.conftest import ROOT
from tests.real.servers import HOST, Servers, free_port


@pytest.fixture
def servers() -> Iterator[Servers]:
    with Servers() as started:
        yield started


def run_check(capsys: pytest.CaptureFixture[str], *argv: str, **settings: Any) -> tuple[int, str]:
    """The command's exit status and output, run the way scrapy.cmdline runs a command."""
    command = Command()
    command.settings = Settings()
    command.settings.setdict(command.default_settings, priority="command")
    command.settings.setdict(settings, priority="project")
    parser = argparse.ArgumentParser(conflict_handler="resolve")
    command.add_options(parser)
    opts, args = parser.parse_known_args(["--timeout", "5", *argv])
    command.process_options(args, opts)
    capsys.readouterr()
    command.run(args, opts)
    return command.exitcode, capsys.readouterr().out


def check_json(capsys: pytest.CaptureFixture[str], *argv: str, **settings: Any) -> tuple[int, dict[str, Any]]:
    status, out = run_check(capsys, "--json", *argv, **settings)
    return status, json.loads(out)


def paths_of(url: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {path["path"]: path for path in url["paths"]}


def dead_proxy() -> str:
    return f"http://{HOST}:{free_port()}"


def test_squid_works_nginx_answers_its_own_502_a_dead_port_refuses(
    world: World, servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    web = world.add_origin("web")
    world.start()
    squid = servers.squid()
    # nginx as the "proxy": its upstream is a dead port, so every answer is nginx's own 502.
    nginx = servers.nginx(f"{HOST}:{free_port()}")
    dead = dead_proxy()
    url = web.url("/p/1")
    status, document = check_json(capsys, "--proxy", squid.url, "--proxy", nginx.url, "--proxy", dead, url)
    [checked] = document["urls"]
    paths = paths_of(checked)
    verdicts = {name: path["verdict"] for name, path in paths.items()}
    assert verdicts == {
        "direct": "ok",
        squid.url: "ok",
        nginx.url: "proxy_error",
        dead: "proxy_error",
    }, checked
    assert paths[nginx.url]["status"] == 502
    assert paths[nginx.url]["headers"]["server"].startswith("nginx")
    assert paths[dead]["fault"] == {"kind": "proxy_refused", "blame": "proxy"}
    assert checked["verdict"] == "paths_fail"
    assert f"proxy {nginx.url} answers its own 502" in checked["findings"]
    assert f"proxy {dead} refuses connections" in checked["findings"]
    assert status == 0 and document["exit_status"] == 0
    # squid really fetched it, nginx really failed to reach its upstream.
    assert [line.url for line in squid.access_log() if line.method == "GET"] == [url]
    assert "connect() failed (111: Connection refused) while connecting to upstream" in nginx.logs()
    assert world.snapshot()["origins"]["web"]["requests"] == 2  # direct and squid
    for path in (paths["direct"], paths[squid.url]):
        timings = path["timings"]
        assert 0 <= timings["dns"] <= timings["connect"] <= timings["ttfb"] <= timings["total"], timings
        assert timings["tls"] is None and timings["tunnel"] is None


def test_https_through_squid_connect_and_a_squid_whose_acl_bans_the_site(
    world: World, servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    tls = world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    squid = servers.squid()
    banning = servers.squid(deny_hosts=[tls.host])  # squid answers the CONNECT with its own 403
    url = tls.url("/p/1")
    assert url.startswith("https://")
    status, document = check_json(capsys, "--proxy", squid.url, "--proxy", banning.url, url)
    [checked] = document["urls"]
    paths = paths_of(checked)
    assert {name: path["verdict"] for name, path in paths.items()} == {
        "direct": "ok",
        squid.url: "ok",
        banning.url: "banned",
    }, checked
    assert paths[banning.url]["fault"] == {"kind": "tunnel_403", "blame": "pair"}
    assert paths[banning.url]["headers"]["x-squid-error"].startswith("ERR_ACCESS_DENIED")
    assert any(f"proxy {banning.url} is banned on this site" in finding for finding in checked["findings"])
    tunnel = paths[squid.url]["timings"]
    assert tunnel["connect"] <= tunnel["tunnel"] <= tunnel["tls"] <= tunnel["ttfb"] <= tunnel["total"], tunnel
    direct = paths["direct"]["timings"]
    assert direct["tunnel"] is None and direct["connect"] <= direct["tls"] <= direct["ttfb"], direct
    assert [line.method for line in squid.access_log()] == ["CONNECT"]
    assert status == 0


def test_nginx_with_a_dead_upstream_as_the_origin_fails_for_everyone(
    servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    squid = servers.squid()
    nginx = servers.nginx(f"{HOST}:{free_port()}")
    status, out = run_check(capsys, "--proxy", squid.url, nginx.url_for("/x"))
    assert "verdict: the origin fails for everyone: 502 [origin_down]" in out, out
    assert "0 of 1 URLs reached by at least one path" in out
    assert status == 1
    status, document = check_json(capsys, "--proxy", squid.url, nginx.url_for("/x"))
    [checked] = document["urls"]
    paths = paths_of(checked)
    assert {path["verdict"] for path in paths.values()} == {"origin_error"}
    assert "squid" in paths[squid.url]["headers"]["via"]  # forwarded by squid, written by nginx
    assert paths[squid.url]["headers"]["server"].startswith("nginx")
    assert status == 1 and document["reached"] is False


def test_with_no_proxy_set_up_it_says_it_checks_the_direct_path_only(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    origin = world.add_origin("shop", OriginSpec())
    world.start()
    command = Command()
    command.settings = Settings()
    parser = argparse.ArgumentParser(conflict_handler="resolve")
    command.add_options(parser)
    opts, args = parser.parse_known_args(["--json", origin.url("/p/1")])
    command.process_options(args, opts)
    command.run(args, opts)
    out, err = capsys.readouterr()
    assert "checking the direct path only" in err and "GATEWAY_PROXIES" in err
    [checked] = json.loads(out)["urls"]  # stdout stays one JSON document
    assert [path["path"] for path in checked["paths"]] == ["direct"] and command.exitcode == 0


def test_a_dead_origin_port_fails_for_everyone_squid_says_so(
    servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    squid = servers.squid()
    port = free_port()
    urls = [f"http://{HOST}:{port}/", f"https://{HOST}:{port}/"]
    status, document = check_json(capsys, "--proxy", squid.url, *urls)
    plain, tls = document["urls"]
    for checked in (plain, tls):
        assert checked["verdict"] == "origin_down", checked
        assert {path["verdict"] for path in checked["paths"]} == {"origin_error"}, checked
        assert paths_of(checked)["direct"]["fault"] == {"kind": "origin_refused", "blame": "origin"}
    # squid's own answers: an error page for http, a refused CONNECT for https, both naming the failure.
    through_plain, through_tls = paths_of(plain)[squid.url], paths_of(tls)[squid.url]
    assert through_plain["status"] == 503 and through_plain["headers"]["x-squid-error"].startswith("ERR_CONNECT_FAIL")
    assert through_tls["error"] == "tunnel" and through_tls["status"] == 503
    assert through_tls["headers"]["x-squid-error"].startswith("ERR_CONNECT_FAIL")
    assert status == 1 and document["reached"] is False


def test_credentials_go_to_the_proxy_only_and_are_never_printed(
    world: World, servers: Servers, capsys: pytest.CaptureFixture[str]
) -> None:
    web, tls = world.add_origin("web"), world.add_origin("tls", OriginSpec(tls=True))
    world.start()
    squid = servers.squid(users=[("alice", "s3cret-pw"), ("bob", "b0b-pw")])
    good, wrong = squid.proxy_url("alice", "s3cret-pw"), squid.proxy_url("bob", "not-b0bs")
    urls = [web.url("/p/1"), tls.url("/p/1")]
    status, out = run_check(capsys, "--proxy", good, "--proxy", wrong, *urls)
    status_json, document = check_json(capsys, "--proxy", good, "--proxy", wrong, *urls)
    for text in (out, json.dumps(document)):
        for secret in ("s3cret-pw", "not-b0bs", "YWxpY2U6czNjcmV0LXB3"):  # the last: base64 alice:s3cret-pw
            assert secret not in text
    alice, bob = f"http://alice:***@{HOST}:{squid.port}", f"http://bob:***@{HOST}:{squid.port}"
    for checked in document["urls"]:
        paths = paths_of(checked)
        assert {name: path["verdict"] for name, path in paths.items()} == {
            "direct": "ok",
            alice: "ok",
            bob: "proxy_error",
        }, checked
        assert f"proxy {bob} rejects the credentials (407)" in checked["findings"]
    kinds = [paths_of(checked)[bob]["fault"]["kind"] for checked in document["urls"]]
    assert kinds == ["http_407", "tunnel_407"]
    assert status == status_json == 0
    snap = world.snapshot()["origins"]
    assert snap["web"]["proxy_authorization_seen"] == 0 and snap["tls"]["proxy_authorization_seen"] == 0
    assert snap["web"]["requests"] == 4 and snap["tls"]["requests"] == 4  # direct and alice, twice
    assert {line.proxy_authorization_user for line in squid.access_log()} == {"alice", "bob"}


def test_bad_input_names_the_option(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from scrapy.exceptions import UsageError

    cases = {
        ("--proxy", "127.0.0.1:3128", "http://a.example/"): "--proxy, entry 1: proxy '127.0.0.1:3128' has no scheme",
        ("--proxies-file", str(tmp_path / "none.txt"), "http://a.example/"): "--proxies-file: cannot read",
        ("--proxy", "http://u:hidden@h:99999", "http://a.example/"): "--proxy, entry 1",
        ("ftp://a.example/",): "only http:// and https:// URLs",
        ("http://a.example/a b",): "cannot be sent as an HTTP/1.1 request",
        ("--no-direct", "http://a.example/"): "--no-direct with no proxy",
        ("--timeout", "0", "http://a.example/"): "--timeout",
        ("--per-site", "0", "http://a.example/"): "--per-site: expected an integer >= 1",
        (): "at least one URL",
    }
    for argv, message in cases.items():
        with pytest.raises(UsageError) as raised:
            run_check(capsys, *argv)
        assert message in str(raised.value), (argv, str(raised.value))
        assert "hidden" not in str(raised.value)
    with pytest.raises(UsageError, match="GATEWAY_PROXIES, entry 2"):
        run_check(capsys, "http://a.example/", GATEWAY_PROXIES=["http://ok:1", "nope"])


# -- demo world proxies: what real proxies do not do on demand ------------------------------------------


def test_a_proxy_that_swallows_the_request_times_out_a_garbled_one_drops_a_slow_one_is_named(
    world: World, capsys: pytest.CaptureFixture[str]
) -> None:
    web = world.add_origin("web")
    hole = world.add_proxy("hole", ProxySpec(mode="blackhole"))
    slow = world.add_proxy("slow", ProxySpec(latency=1.5))
    garbage = world.add_proxy("garbage", ProxySpec(mode="garbage"))
    world.start()
    proxies = ["--proxy", hole.url, "--proxy", slow.url, "--proxy", garbage.url]
    status, document = check_json(capsys, "--timeout", "3", *proxies, web.url("/"))
    [checked] = document["urls"]
    paths = paths_of(checked)
    assert paths[hole.url]["error"] == "timeout" and paths[hole.url]["phase"] == "response"
    assert paths[hole.url]["verdict"] == "proxy_error"
    assert paths[hole.url]["timings"]["connect"] is not None and paths[hole.url]["timings"]["ttfb"] is None
    assert paths[slow.url]["verdict"] == "slow", paths[slow.url]
    assert paths[slow.url]["timings"]["ttfb"] >= 1.5
    assert any(finding.startswith(f"slow through {slow.url}: TTFB ") for finding in checked["findings"])
    assert paths[garbage.url]["error"] == "dropped" and paths[garbage.url]["verdict"] == "proxy_error"
    assert paths[garbage.url]["detail"].startswith("not a valid HTTP answer")
    assert checked["verdict"] == "paths_fail" and status == 0


def test_paths_to_one_site_are_bounded_by_per_site(world: World, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = world.add_origin("a", OriginSpec(service_time=0.5)), world.add_origin("b", OriginSpec(service_time=0.5))
    proxies = [world.add_proxy(f"good{i}", ProxySpec()) for i in range(6)]
    world.start()
    options = [arg for proxy in proxies for arg in ("--proxy", proxy.url)]
    status, _ = check_json(capsys, "--per-site", "2", "--concurrency", "8", *options, a.url("/"), b.url("/"))
    snap = world.snapshot()["origins"]
    assert status == 0
    assert snap["a"]["requests"] == snap["b"]["requests"] == 7
    assert snap["a"]["max_in_flight"] <= 2 and snap["b"]["max_in_flight"] <= 2, snap
    world.reset_counters()
    status, _ = check_json(capsys, "--per-site", "7", "--concurrency", "7", *options, a.url("/"))
    assert world.snapshot()["origins"]["a"]["max_in_flight"] > 2  # the bound above was the option's doing


# -- the installed command ----------------------------------------------------------------------------


def scrapy(*argv: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("SCRAPY_SETTINGS_MODULE", None)
    return subprocess.run(
        [sys.executable, "-m", "scrapy", *argv], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_scrapy_gateway_check_is_a_scrapy_command(world: World, tmp_path: Path) -> None:
    from importlib.metadata import entry_points

    registered = [e.value for e in entry_points(group="scrapy.commands") if e.name == "gateway-check"]
    assert registered == ["scrapy_gateway.commands.check:Command"], (
        "the scrapy.commands entry point is not installed: pip install -e . (setup.cfg declares it)"
    )
    web = world.add_origin("web")
    world.start()
    dead = dead_proxy()
    # Outside a project: the proxies come from the options.
    done = scrapy("gateway-check", "--json", "--timeout", "5", "--proxy", dead, web.url("/"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [checked] = json.loads(done.stdout)["urls"]
    assert checked["verdict"] == "provider" and checked["summary"] == "direct works, every proxy fails: the provider"
    # Inside the demo project: its settings, here GATEWAY_PROXIES given with -s.
    done = scrapy(
        "gateway-check", "--no-direct", "-s", f"GATEWAY_PROXIES={dead}", web.url("/"), cwd=ROOT / "example_project"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"proxy {dead} refuses connections" in done.stdout
    done = scrapy("gateway-check", "--proxy", "nope", web.url("/"), cwd=tmp_path)
    assert done.returncode == 2
    assert "--proxy, entry 1: proxy 'nope' has no scheme" in done.stderr
