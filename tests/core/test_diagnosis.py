"""gateway-check's verdicts (core/diagnosis.py), one row per situation: the paths of a check, the
verdict each path gets, the URL's verdict and the finding that names the culprit."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pytest

from scrapy_gateway.commands.check_output import as_json, as_text, exit_status
from scrapy_gateway.config import DEFAULT_HTTP_CODES
from scrapy_gateway.core.diagnosis import (
    PathVerdict,
    Phase,
    Probe,
    Rules,
    Timings,
    UrlDiagnosis,
    UrlVerdict,
    diagnose,
)
from scrapy_gateway.core.faults import TransportError

URL = "http://site.example/p"
OTHER = "http://other.example/p"
RULES = Rules(frozenset(DEFAULT_HTTP_CODES))
ORIGIN_SERVER = {"server": "origin/1.0"}
DEAD = "http://127.0.0.1:9"  # proxy names as the command shows them


def p(
    proxy: str | None,
    status: int | None = 200,
    *,
    url: str = URL,
    headers: dict[str, str] | None = None,
    error: TransportError | None = None,
    phase: Phase | None = None,
    tunnel: bool = False,
    ttfb: float = 0.01,
) -> Probe:
    """A probe; answers carry the origin's Server header unless `headers` says otherwise."""
    if headers is None:
        headers = dict(ORIGIN_SERVER) if status is not None and error is None else {}
    host = url.split("/")[2]
    return Probe(
        url=url,
        host=host,
        proxy=proxy,
        status=status,
        headers=headers,
        error=error,
        phase=phase,
        tunnel=tunnel,
        timings=Timings(dns=0.0, connect=0.0, ttfb=None if error else ttfb, total=None if error else ttfb),
    )


def refused(proxy: str | None, url: str = URL) -> Probe:
    return p(proxy, None, url=url, error=TransportError.REFUSED, phase=Phase.CONNECT)


@dataclass
class Case:
    name: str
    probes: list[Probe]
    paths: dict[str, PathVerdict]  # path -> verdict, for the probes of URL
    verdict: UrlVerdict
    finding: str = ""  # a finding of URL's diagnosis contains this
    extra: list[Probe] = field(default_factory=list)  # probes of other URLs, for cross-site evidence


OK, SLOW, PROXY, BANNED, ORIGIN, FAILED = (
    PathVerdict.OK,
    PathVerdict.SLOW,
    PathVerdict.PROXY,
    PathVerdict.BANNED,
    PathVerdict.ORIGIN,
    PathVerdict.FAILED,
)

CASES = [
    Case("all ok", [p(None), p("a"), p("b")], {"direct": OK, "a": OK, "b": OK}, UrlVerdict.OK),
    Case("a 404 reaches the URL", [p(None, 404), p("a", 404)], {"direct": OK, "a": OK}, UrlVerdict.OK),
    Case(
        "the origin fails for everyone",
        [p(None, 502), p("a", 502), p("b", 503)],
        {"direct": ORIGIN, "a": ORIGIN, "b": ORIGIN},
        UrlVerdict.ORIGIN_DOWN,
    ),
    Case(
        "a proxy's own 502 (not the origin's Server) while the others work",
        [p(None), p("a"), p("b", 502, headers={})],
        {"direct": OK, "a": OK, "b": PROXY},
        UrlVerdict.PATHS_FAIL,
        "proxy b answers its own 502",
    ),
    Case(
        "a proxy's own 502 in an origin outage is still the proxy's",
        [p(None, 502), p("a", 502), p("b", 502, headers={"server": "nginx"})],
        {"direct": ORIGIN, "a": ORIGIN, "b": PROXY},
        UrlVerdict.ORIGIN_DOWN,
        "proxy b answers its own 502",
    ),
    Case(
        "without direct, the origin's Server is the one the working proxies forward",
        [p("a"), p("b", 502, headers={"server": "provider-gw"})],
        {"a": OK, "b": PROXY},
        UrlVerdict.PATHS_FAIL,
        "proxy b answers its own 502",
    ),
    Case(
        "a proxy rewriting Server on what it forwards does not make its own 502 the origin's",
        [p(None), p("a", headers={"server": "proxy-a"}), p("b", 502, headers={"server": "proxy-a"})],
        {"direct": OK, "a": OK, "b": PROXY},
        UrlVerdict.PATHS_FAIL,
        "proxy b answers its own 502",
    ),
    Case(
        "a dead proxy port",
        [p(None), p("a"), refused(DEAD)],
        {"direct": OK, "a": OK, DEAD: PROXY},
        UrlVerdict.PATHS_FAIL,
        f"proxy {DEAD} refuses connections",
    ),
    Case(
        "a proxy that does not accept the connection in time",
        [p(None), p("a", None, error=TransportError.TIMEOUT, phase=Phase.CONNECT)],
        {"direct": OK, "a": PROXY},
        UrlVerdict.PROVIDER,
        "proxy a cannot be reached",
    ),
    Case(
        "a 403 through one proxy while the others get through",
        [p(None), p("a"), p("b", 403)],
        {"direct": OK, "a": OK, "b": BANNED},
        UrlVerdict.PATHS_FAIL,
        "proxy b is banned on this site",
    ),
    Case(
        "a 429 through a proxy is a per-address limit",
        [p(None), p("a"), p("b", 429)],
        {"direct": OK, "a": OK, "b": BANNED},
        UrlVerdict.PATHS_FAIL,
        "proxy b is banned on this site",
    ),
    Case(
        "CONNECT refused with 403 (squid's ACL)",
        [p(None), p("a", tunnel=True), p("b", 403, error=TransportError.TUNNEL, phase=Phase.TUNNEL, tunnel=True)],
        {"direct": OK, "a": OK, "b": BANNED},
        UrlVerdict.PATHS_FAIL,
        "proxy b is banned on this site (CONNECT answered 403)",
    ),
    Case(
        "a proxy's own 502 here, a working proxy on another site: banned here",
        [p(None), p("a"), p("b", 502, headers={})],
        {"direct": OK, "a": OK, "b": BANNED},
        UrlVerdict.PATHS_FAIL,
        "proxy b is banned on this site (502)",
        extra=[p(None, url=OTHER), p("b", url=OTHER)],
    ),
    Case(
        "Proxy-Status naming a proxy-side error, the proxy failing everywhere",
        [p(None), p("a"), p("b", 502, headers={"proxy-status": "b; error=http_request_denied"})],
        {"direct": OK, "a": OK, "b": PROXY},
        UrlVerdict.PATHS_FAIL,
        "proxy b answers its own 502",
    ),
    Case(
        "Proxy-Status naming a proxy-side error, the proxy working on another site",
        [p(None), p("b", 502, headers={"proxy-status": "b; error=http_request_denied"})],
        {"direct": OK, "b": BANNED},
        UrlVerdict.PROVIDER,
        "proxy b is banned on this site",
        extra=[p("b", url=OTHER)],
    ),
    Case(
        "the origin's 502 forwarded to one proxy while others get through (an overload)",
        [p(None), p("a"), p("b", 502)],
        {"direct": OK, "a": OK, "b": ORIGIN},
        UrlVerdict.PATHS_FAIL,
        "the origin answers 502 through proxy b while other paths get through",
    ),
    Case(
        "a 503 inside a tunnel is the origin's answer to that exit",
        [p(None), p("a", tunnel=True), p("b", 503, tunnel=True, headers={})],
        {"direct": OK, "a": OK, "b": ORIGIN},
        UrlVerdict.PATHS_FAIL,
        "the origin answers 503 through proxy b",
    ),
    Case(
        "squid could not reach the origin, and neither can anyone",
        [
            p(None, None, error=TransportError.REFUSED, phase=Phase.CONNECT),
            p("a", 503, headers={"x-squid-error": "ERR_CONNECT_FAIL 111", "server": "squid"}),
        ],
        {"direct": ORIGIN, "a": ORIGIN},
        UrlVerdict.ORIGIN_DOWN,
    ),
    Case(
        "a proxy reporting the origin unreachable, which the others reach",
        [p(None), p("a"), p("b", 502, headers={"proxy-status": "b; error=destination_unavailable"})],
        {"direct": OK, "a": OK, "b": PROXY},
        UrlVerdict.PATHS_FAIL,
        "proxy b cannot reach this site (502 with proxy-status: b; error=destination_unavailable)",
    ),
    Case(
        "a proxy reporting the origin unreachable, working on another site: banned here",
        [p(None), p("b", 503, headers={"x-squid-error": "ERR_CONNECT_FAIL 111", "server": "squid"})],
        {"direct": OK, "b": BANNED},
        UrlVerdict.PROVIDER,
        "proxy b cannot reach this site",
        extra=[p("b", url=OTHER)],
    ),
    Case(
        "a CONNECT squid could not open, and the origin refuses everyone",
        [
            p(None, None, error=TransportError.REFUSED, phase=Phase.CONNECT),
            p(
                "a",
                503,
                error=TransportError.TUNNEL,
                phase=Phase.TUNNEL,
                tunnel=True,
                headers={"x-squid-error": "ERR_CONNECT_FAIL 111"},
            ),
        ],
        {"direct": ORIGIN, "a": ORIGIN},
        UrlVerdict.ORIGIN_DOWN,
    ),
    Case(
        "a CONNECT answered with the proxy's own 502 while the others get through",
        [p(None), p("a", tunnel=True), p("b", 502, error=TransportError.TUNNEL, phase=Phase.TUNNEL, tunnel=True)],
        {"direct": OK, "a": OK, "b": PROXY},
        UrlVerdict.PATHS_FAIL,
        "proxy b answers the CONNECT with its own 502",
    ),
    Case(
        "wrong credentials",
        [p(None), p("a"), p("b", 407, headers={})],
        {"direct": OK, "a": OK, "b": PROXY},
        UrlVerdict.PATHS_FAIL,
        "proxy b rejects the credentials (407)",
    ),
    Case(
        "wrong credentials on a CONNECT",
        [p(None), p("b", 407, error=TransportError.TUNNEL, phase=Phase.TUNNEL, tunnel=True)],
        {"direct": OK, "b": PROXY},
        UrlVerdict.PROVIDER,
        "proxy b rejects the credentials (407)",
    ),
    Case(
        "direct works, every proxy fails: the provider",
        [p(None), refused(DEAD), p("b", 502, headers={})],
        {"direct": OK, DEAD: PROXY, "b": PROXY},
        UrlVerdict.PROVIDER,
    ),
    Case(
        "no direct path, every proxy fails without evidence",
        [p("a", 502, headers={}), p("b", None, error=TransportError.DROPPED, phase=Phase.RESPONSE)],
        {"a": FAILED, "b": FAILED},
        UrlVerdict.UNREACHABLE,
    ),
    Case(
        "this machine's address is banned, the proxies get through",
        [p(None, 403), p("a")],
        {"direct": BANNED, "a": OK},
        UrlVerdict.PATHS_FAIL,
        "direct is banned on this site",
    ),
    Case(
        "direct times out, the proxies get through",
        [p(None, None, error=TransportError.TIMEOUT, phase=Phase.RESPONSE), p("a")],
        {"direct": FAILED, "a": OK},
        UrlVerdict.PATHS_FAIL,
        "direct fails (timeout at response), proxies get through",
    ),
    Case(
        "slow through one proxy",
        [p(None, ttfb=0.3), p("a", ttfb=0.35), p("b", ttfb=4.2)],
        {"direct": OK, "a": OK, "b": SLOW},
        UrlVerdict.SLOW,
        "slow through b: TTFB 4.2 s vs 0.3 s direct",
    ),
    Case(
        "without direct, slow against the fastest proxy",
        [p("a", ttfb=0.2), p("b", ttfb=3.0)],
        {"a": OK, "b": SLOW},
        UrlVerdict.SLOW,
        "slow through b: TTFB 3.0 s vs 0.2 s through a",
    ),
    Case(
        "several times slower but by milliseconds is not slow",
        [p(None, ttfb=0.002), p("a", ttfb=0.05)],
        {"direct": OK, "a": OK},
        UrlVerdict.OK,
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_verdicts(case: Case) -> None:
    diagnoses = {d.url: d for d in diagnose(case.probes + case.extra, RULES, now_epoch=0.0)}
    diagnosis = diagnoses[URL]
    got = {path.probe.path: path.verdict for path in diagnosis.paths}
    assert got == case.paths, [(path.probe.path, path.verdict, path.reason) for path in diagnosis.paths]
    assert diagnosis.verdict is case.verdict, diagnosis.summary
    if case.finding:
        assert any(case.finding in finding for finding in diagnosis.findings), diagnosis.findings
    assert diagnosis.reached == any(v in (OK, SLOW) for v in case.paths.values())


def test_urls_keep_their_order_and_the_exit_status_needs_every_url_reached() -> None:
    probes = [p(None, url=OTHER), p(None, 502), p("a", 502)]
    diagnoses = diagnose(probes, RULES, now_epoch=0.0)
    assert [d.url for d in diagnoses] == [OTHER, URL]
    assert exit_status(diagnoses) == 1
    assert exit_status(diagnoses[:1]) == 0


def test_a_status_outside_the_gateway_codes_reaches_the_url() -> None:
    rules = Rules(frozenset({502}))
    [diagnosis] = diagnose([p(None, 503)], rules, now_epoch=0.0)
    assert diagnosis.verdict is UrlVerdict.OK


def test_outputs_carry_each_path_and_the_verdicts() -> None:
    diagnoses: list[UrlDiagnosis] = diagnose([p(None), refused(DEAD)], RULES, now_epoch=0.0)
    text = as_text(diagnoses)
    assert "direct works, every proxy fails: the provider" in text
    assert f"proxy {DEAD} refuses connections" in text
    assert "1 of 1 URLs reached" in text
    document = json.loads(as_json(diagnoses))
    [url] = document["urls"]
    assert url["verdict"] == "provider" and url["reached"] is True
    assert [path["path"] for path in url["paths"]] == ["direct", DEAD]
    dead = url["paths"][1]
    assert dead["fault"] == {"kind": "proxy_refused", "blame": "proxy"}
    assert dead["error"] == "refused" and dead["phase"] == "connect" and dead["verdict"] == "proxy_error"
    assert set(dead["timings"]) == {"dns", "connect", "proxy_tls", "tunnel", "tls", "ttfb", "total"}
    assert document["exit_status"] == 0
