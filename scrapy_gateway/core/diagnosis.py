"""gateway-check's verdicts: given how each path (direct, or through one proxy) fared on each URL,
whose fault each failure is and what it means for the URL.

Each failure is first classified by `faults.py`, as the middleware classifies it; what one answer
cannot say, the other paths of the same check settle, as `blame.py` settles it from history:
the other paths on the same URL (does anyone reach it?) and the same proxy on the other URLs'
hosts (does it work elsewhere?). Nothing here touches the network: the prober hands in `Probe`s.

A path *reaches* a URL when the origin answered with a status the gateway would pass to the spider
(anything but GATEWAY_HTTP_CODES, a 403 or 429, or a proxy's 407): a 404 reaches, a 503 does not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum

from scrapy_gateway.core.faults import (
    Blame,
    Fault,
    TransportError,
    blame_from_headers,
    classify_status,
    classify_transport,
)

# Refusals a site gives one address: a failure for the check whatever GATEWAY_HTTP_CODES says.
BAN_STATUSES = frozenset({403, 429})
SLOW_FACTOR = 3.0  # a path this many times slower than the reference to its first byte is slow...
SLOW_MARGIN = 1.0  # ...and at least this many seconds slower (loopback jitter is not slowness)


class Phase(str, Enum):
    """Where a path stopped; the proxy was never reached while still in DNS or CONNECT."""

    DNS = "dns"
    CONNECT = "connect"
    PROXY_TLS = "proxy_tls"  # TLS with an https:// proxy
    TUNNEL = "tunnel"  # our CONNECT, for an https URL through a proxy
    TLS = "tls"  # TLS with the origin (inside the tunnel through a proxy)
    RESPONSE = "response"  # the request is sent; waiting for or reading the answer


_BEFORE_PROXY = frozenset({Phase.DNS, Phase.CONNECT, Phase.PROXY_TLS})


@dataclass(frozen=True, slots=True)
class Timings:
    """Seconds from the path's start to the end of each phase, as curl -w's time_* are; None for
    a phase the path did not have (no TLS for http://) or did not reach."""

    dns: float | None = None
    connect: float | None = None
    proxy_tls: float | None = None
    tunnel: float | None = None
    tls: float | None = None
    ttfb: float | None = None
    total: float | None = None


@dataclass(frozen=True, slots=True)
class Probe:
    """How one path fared on one URL."""

    url: str
    host: str  # the origin's host:port: a ban is per site, and "works elsewhere" means another one
    proxy: str | None  # the proxy's name as shown (credentials masked); None: direct
    status: int | None = None  # the answer's status; for a TUNNEL error, the CONNECT's
    headers: Mapping[str, str] = field(default_factory=dict)  # evidence headers, lower-case names
    error: TransportError | None = None
    phase: Phase | None = None  # where an error happened
    tunnel: bool = False  # an https URL through a proxy: the proxy only relayed bytes
    detail: str = ""  # the error's text, credentials masked
    timings: Timings = field(default_factory=Timings)

    @property
    def path(self) -> str:
        return self.proxy or "direct"


class PathVerdict(str, Enum):
    OK = "ok"
    SLOW = "slow"
    PROXY = "proxy_error"  # the proxy itself failed, or wrote the error
    BANNED = "banned"  # the site refuses this path's address while other paths get through
    ORIGIN = "origin_error"  # the origin fails for everyone
    FAILED = "failed"  # a failure nothing here settles


class UrlVerdict(str, Enum):
    OK = "ok"  # every path reaches the URL
    SLOW = "slow"  # every path reaches it, some much slower than the others
    PATHS_FAIL = "paths_fail"  # some paths reach it, some do not
    PROVIDER = "provider"  # direct reaches it, every proxy fails
    ORIGIN_DOWN = "origin_down"  # the origin fails for everyone
    UNREACHABLE = "unreachable"  # no path reaches it, and nothing shows it is the origin


@dataclass(frozen=True, slots=True)
class PathDiagnosis:
    probe: Probe
    verdict: PathVerdict
    reason: str
    fault: Fault | None = None  # None: an answer the gateway would pass on
    finding: str = ""  # the sentence this path adds to its URL's verdict ("" when ok)

    @property
    def reached(self) -> bool:
        return self.verdict in (PathVerdict.OK, PathVerdict.SLOW)


@dataclass(frozen=True, slots=True)
class UrlDiagnosis:
    url: str
    verdict: UrlVerdict
    summary: str
    paths: tuple[PathDiagnosis, ...]

    @property
    def reached(self) -> bool:
        return any(path.reached for path in self.paths)

    @property
    def findings(self) -> tuple[str, ...]:
        return tuple(path.finding for path in self.paths if path.finding)


@dataclass(frozen=True, slots=True)
class Rules:
    """What counts as a failure and how Retry-After is read: the gateway's own settings."""

    http_codes: frozenset[int]
    retry_after_cap: float = 120.0
    slow_factor: float = SLOW_FACTOR
    slow_margin: float = SLOW_MARGIN


def fault_of(probe: Probe, rules: Rules, now_epoch: float) -> Fault | None:
    """The middleware's classification of this path's outcome; None when it reached the URL."""
    via_proxy = probe.proxy is not None
    if probe.error is not None:
        return classify_transport(probe.error, via_proxy=via_proxy, status=probe.status)
    status = probe.status
    assert status is not None, "a probe without an error has a status"
    if status in rules.http_codes or status in BAN_STATUSES or (status == 407 and via_proxy):
        return classify_status(
            status,
            probe.headers,
            via_proxy=via_proxy,
            in_tunnel=probe.tunnel,
            now_epoch=now_epoch,
            retry_after_cap=rules.retry_after_cap,
        )
    return None


def diagnose(probes: Sequence[Probe], rules: Rules, now_epoch: float) -> list[UrlDiagnosis]:
    """Verdicts for every URL, in the order the probes name them."""
    faults = [fault_of(probe, rules, now_epoch) for probe in probes]
    # Where each proxy reached its URL: a proxy that works on one site and fails on another is
    # refused by that site, not broken.
    worked: dict[str, set[str]] = {}
    for probe, fault in zip(probes, faults, strict=True):
        if fault is None and probe.proxy is not None:
            worked.setdefault(probe.proxy, set()).add(probe.host)
    by_url: dict[str, list[tuple[Probe, Fault | None]]] = {}
    for probe, fault in zip(probes, faults, strict=True):
        by_url.setdefault(probe.url, []).append((probe, fault))
    return [_url(url, entries, worked, rules) for url, entries in by_url.items()]


@dataclass(frozen=True, slots=True)
class _Context:
    """What the rest of the check says about one failure."""

    writer: Blame | None  # who wrote the answer: Blame.PROXY, Blame.ORIGIN, or None (unknown)
    why: str  # the evidence for `writer` when the failure itself does not show it ("" otherwise)
    others_reach: bool  # some path reaches the URL
    origin_evidence: bool  # some failure on the URL was surely written by the origin
    works_on: frozenset[str]  # the other sites this path's proxy reached


def _url(
    url: str, entries: list[tuple[Probe, Fault | None]], worked: Mapping[str, set[str]], rules: Rules
) -> UrlDiagnosis:
    reached = [probe for probe, fault in entries if fault is None]
    reference = _reference(reached)
    servers = _origin_servers(entries)
    writers = {id(probe): _writer(probe, fault, servers) for probe, fault in entries if fault is not None}
    origin_evidence = any(writer is Blame.ORIGIN for writer, _ in writers.values())
    paths = []
    for probe, fault in entries:
        if fault is None:
            paths.append(_ok(probe, reference, rules))
            continue
        writer, why = writers[id(probe)]
        works_on = frozenset(worked.get(probe.proxy or "", set()) - {probe.host})
        paths.append(_failed(probe, fault, _Context(writer, why, bool(reached), origin_evidence, works_on)))
    verdict, summary = _url_verdict(tuple(paths))
    return UrlDiagnosis(url, verdict, summary, tuple(paths))


def _origin_servers(entries: list[tuple[Probe, Fault | None]]) -> set[str]:
    """The origin's Server header ("" for none): a proxy forwards it, its own error page carries
    its own. From the answers the origin surely wrote (direct, or inside a tunnel), else from
    those that reached the URL through a plain proxy (which may rewrite it)."""
    answers = [probe for probe, _ in entries if probe.status is not None and probe.error is None]
    sure = {probe.headers.get("server", "") for probe in answers if probe.proxy is None or probe.tunnel}
    if sure:
        return sure
    return {probe.headers.get("server", "") for probe, fault in entries if fault is None}


def _writer(probe: Probe, fault: Fault, origin_servers: set[str]) -> tuple[Blame | None, str]:
    """Who wrote this failure, and the evidence when only the Server header tells."""
    if probe.proxy is None:
        return Blame.ORIGIN, ""
    if probe.error is TransportError.TUNNEL and blame_from_headers(probe.headers) is Blame.ORIGIN:
        return Blame.ORIGIN, ""  # the proxy's answer to our CONNECT says the origin failed it
    if probe.error is not None:
        return (Blame.PROXY if probe.phase in _BEFORE_PROXY or fault.blame is Blame.PROXY else None), ""
    if probe.tunnel:
        return Blame.ORIGIN, ""  # inside the tunnel the proxy only relays bytes
    evidence = blame_from_headers(probe.headers)
    if evidence is not None:
        return (Blame.ORIGIN if evidence is Blame.ORIGIN else Blame.PROXY), ""
    if not origin_servers:
        return None, ""
    server = probe.headers.get("server", "")
    if server in origin_servers:
        return Blame.ORIGIN, f"Server {server!r}, the origin's" if server else "no Server header, as the origin's"
    known = ", ".join(repr(name) for name in sorted(origin_servers) if name) or "none"
    return (
        Blame.PROXY,
        f"Server {server!r}, the origin's is {known}" if server else f"no Server header, the origin's is {known}",
    )


def _reference(reached: list[Probe]) -> Probe | None:
    """What a slow path is compared with: direct when it reached the URL, else the fastest path."""
    timed = [probe for probe in reached if probe.timings.ttfb is not None]
    for probe in timed:
        if probe.proxy is None:
            return probe
    return min(timed, key=lambda probe: probe.timings.ttfb or 0.0, default=None)


def _ok(probe: Probe, reference: Probe | None, rules: Rules) -> PathDiagnosis:
    answered = f"the origin answered {probe.status}"
    ttfb = probe.timings.ttfb
    if reference is None or reference is probe or ttfb is None or reference.timings.ttfb is None:
        return PathDiagnosis(probe, PathVerdict.OK, answered)
    base = reference.timings.ttfb
    if ttfb < base * rules.slow_factor or ttfb - base < rules.slow_margin:
        return PathDiagnosis(probe, PathVerdict.OK, answered)
    compared = f"TTFB {ttfb:.1f} s vs {base:.1f} s {_through(reference)}"
    return PathDiagnosis(
        probe, PathVerdict.SLOW, f"{answered}, {compared}", finding=f"slow {_through(probe)}: {compared}"
    )


def _through(probe: Probe) -> str:
    return f"through {probe.proxy}" if probe.proxy else "direct"


def _failed(probe: Probe, fault: Fault, seen: _Context) -> PathDiagnosis:
    """One failure, judged with what the rest of the check saw (first matching rule wins)."""
    what = _what(probe, fault)
    if probe.proxy is None:
        return _direct_failed(probe, fault, seen.others_reach, what)
    name = f"proxy {probe.proxy}"
    written = f"{what} ({seen.why})" if seen.why else what
    elsewhere = f"it works on {', '.join(sorted(seen.works_on))}"
    if fault.blame is Blame.PROXY and (fault.hard or not seen.works_on):
        return _proxy_error(probe, fault, what)
    if fault.blame is Blame.PROXY or fault.blame is Blame.PAIR:
        reason = f"{what}; {elsewhere}" if seen.works_on else what
        return PathDiagnosis(probe, PathVerdict.BANNED, reason, fault, f"{name} is banned on this site ({what})")
    if not seen.others_reach:
        if seen.writer is Blame.PROXY:
            return _proxy_error(probe, fault, written)
        if seen.writer is Blame.ORIGIN or seen.origin_evidence:
            return PathDiagnosis(probe, PathVerdict.ORIGIN, what, fault)
        return PathDiagnosis(probe, PathVerdict.FAILED, f"{what}; no path reaches the URL", fault, f"{name}: {what}")
    # Other paths reach the URL: the failure is this path's, or the origin's answer to this path.
    if probe.status in BAN_STATUSES:
        reason = f"{what} while other paths reach the URL"
        return PathDiagnosis(probe, PathVerdict.BANNED, reason, fault, f"{name} is banned on this site ({what})")
    if seen.writer is Blame.ORIGIN and _reported(probe):
        # The proxy wrote it, saying it could not get an answer from the origin, which the others do.
        reason = f"{what}: the proxy reports the origin unreachable, which other paths reach"
        if seen.works_on:
            return PathDiagnosis(
                probe, PathVerdict.BANNED, f"{reason}; {elsewhere}", fault, f"{name} cannot reach this site ({what})"
            )
        return PathDiagnosis(probe, PathVerdict.PROXY, reason, fault, f"{name} cannot reach this site ({what})")
    if seen.writer is Blame.ORIGIN:
        reason = f"the origin answered {written} while other paths got through: it sheds load, or limits this address"
        finding = f"the origin answers {what} through {name} while other paths get through"
        return PathDiagnosis(probe, PathVerdict.ORIGIN, reason, fault, finding)
    if seen.works_on:
        reason = f"{written} while other paths reach the URL; {elsewhere}"
        return PathDiagnosis(probe, PathVerdict.BANNED, reason, fault, f"{name} is banned on this site ({what})")
    return _proxy_error(probe, fault, written)


def _reported(probe: Probe) -> bool:
    """The proxy's own error headers name a failure past it (squid's, or a Proxy-Status error=)."""
    last_status = probe.headers.get("proxy-status", "").split(",")[-1]
    return bool(probe.headers.get("x-squid-error")) or "error=" in last_status.replace(" ", "")


def _direct_failed(probe: Probe, fault: Fault, others_reach: bool, what: str) -> PathDiagnosis:
    if not others_reach:
        return PathDiagnosis(probe, PathVerdict.ORIGIN, what, fault)
    if probe.status in BAN_STATUSES:
        reason = f"{what}: the site refuses this machine's address, not the proxies'"
        return PathDiagnosis(probe, PathVerdict.BANNED, reason, fault, f"direct is banned on this site ({what})")
    reason = f"{what} while proxies reach the URL: this machine's network or address"
    return PathDiagnosis(probe, PathVerdict.FAILED, reason, fault, f"direct fails ({what}), proxies get through")


def _proxy_error(probe: Probe, fault: Fault, what: str) -> PathDiagnosis:
    name = f"proxy {probe.proxy}"
    if fault.kind in ("http_407", "tunnel_407"):
        finding = f"{name} rejects the credentials (407)"
    elif fault.kind == "proxy_refused":
        finding = f"{name} refuses connections"
    elif fault.kind == "proxy_dns":
        finding = f"{name}: its host name does not resolve"
    elif probe.phase in _BEFORE_PROXY:
        finding = f"{name} cannot be reached ({what})"
    elif probe.status is not None and probe.error is None:
        finding = f"{name} answers its own {probe.status}"
    elif probe.error is TransportError.TUNNEL and probe.status is not None:
        finding = f"{name} answers the CONNECT with its own {probe.status}"
    else:
        finding = f"{name} fails ({what})"
    return PathDiagnosis(probe, PathVerdict.PROXY, what, fault, finding)


def _what(probe: Probe, fault: Fault) -> str:
    """The failure in a few words, with the evidence that classified it."""
    if probe.error is TransportError.TUNNEL:
        text = f"CONNECT answered {probe.status}" if probe.status else "CONNECT failed"
    elif probe.error is not None:
        text = f"{probe.error.value} at {probe.phase.value}" if probe.phase else probe.error.value
    else:
        text = str(probe.status)
    evidence = [
        f"{name}: {probe.headers[name]}" for name in ("proxy-status", "x-squid-error") if probe.headers.get(name)
    ]
    return f"{text} with {' and '.join(evidence)}" if evidence else text


def _url_verdict(paths: tuple[PathDiagnosis, ...]) -> tuple[UrlVerdict, str]:
    """First matching rule wins."""
    reached = [path for path in paths if path.reached]
    failed = [path for path in paths if not path.reached]
    proxies = [path for path in paths if path.probe.proxy is not None]
    direct_reached = any(path.probe.proxy is None for path in reached)
    if not reached:
        if any(path.verdict is PathVerdict.ORIGIN for path in paths):
            statuses = sorted({path.reason for path in paths if path.verdict is PathVerdict.ORIGIN})
            return UrlVerdict.ORIGIN_DOWN, f"the origin fails for everyone: {', '.join(statuses)}"
        return UrlVerdict.UNREACHABLE, "no path reaches the URL"
    if direct_reached and proxies and all(not path.reached for path in proxies):
        return UrlVerdict.PROVIDER, "direct works, every proxy fails: the provider"
    if failed:
        return UrlVerdict.PATHS_FAIL, f"{len(failed)} of {len(paths)} paths fail"
    slow = [path for path in paths if path.verdict is PathVerdict.SLOW]
    if slow:
        return UrlVerdict.SLOW, "; ".join(path.finding for path in slow)
    return UrlVerdict.OK, "every path reaches the URL"
