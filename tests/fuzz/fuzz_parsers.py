"""Coverage-guided fuzzing (atheris) of every parser that reads input from outside.

    python tests/fuzz/fuzz_parsers.py -runs=200000      # or -max_total_time=60

Each target must either return a value or raise the one error it documents (with a message that
never shows a password); anything else is a crash. tests/fuzz/test_fuzz.py runs a short session.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    from scrapy_gateway.config import SETTINGS, ConfigError, GatewayConfig
    from scrapy_gateway.core.faults import blame_from_headers, classify_status, tunnel_status
    from scrapy_gateway.core.proxies import ProxyListError, parse_proxies, parse_proxy, split_proxy_text
    from scrapy_gateway.core.retry_after import parse_retry_after

_NAMES = sorted(SETTINGS)


def _one_input(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    text = fdp.ConsumeUnicodeNoSurrogates(256)
    cap = fdp.ConsumeFloatInRange(0.0, 1e6)
    result = parse_retry_after(text, 1.7e9, cap)
    assert result is None or 0.0 <= result <= cap

    status = tunnel_status(text)
    assert status is None or 100 <= status <= 999
    blame_from_headers({"proxy-status": text, "x-squid-error": text})
    classify_status(
        fdp.ConsumeIntInRange(100, 599),
        {"retry-after": text, "proxy-status": text},
        via_proxy=fdp.ConsumeBool(),
        in_tunnel=fdp.ConsumeBool(),
        now_epoch=1.7e9,
        retry_after_cap=cap,
    )

    with contextlib.suppress(ProxyListError):
        parse_proxies(split_proxy_text(fdp.ConsumeUnicodeNoSurrogates(256)), source="GATEWAY_PROXIES")

    secret = "Zq9" + fdp.ConsumeUnicodeNoSurrogates(8)
    tail = fdp.ConsumeUnicodeNoSurrogates(64)
    if secret not in tail:
        try:
            proxy = parse_proxy(f"http://user:{secret}@{tail}")
        except ProxyListError as exc:
            assert secret not in str(exc), "an error message shows the password"
        else:
            assert secret not in proxy.key and secret not in proxy.masked

    name = _NAMES[fdp.ConsumeIntInRange(0, len(_NAMES) - 1)]
    choice = fdp.ConsumeIntInRange(0, 4)
    value: object = [text, fdp.ConsumeInt(8), fdp.ConsumeRegularFloat(), [text], None][choice]
    try:
        GatewayConfig.from_settings({name: value})
    except ConfigError as exc:
        assert str(exc).startswith("GATEWAY_"), exc


def main() -> None:
    atheris.Setup(sys.argv, _one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
