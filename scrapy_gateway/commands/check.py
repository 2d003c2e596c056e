"""`scrapy gateway-check URL [URL ...]`: each URL fetched directly and through every proxy, with
per-phase timings, the evidence headers and whose fault each failure is (core/diagnosis.py).

It runs its own asyncio loop and needs no crawler, so no Twisted reactor is installed. Inside a
project the proxies are the project's (GATEWAY_PROXIES, GATEWAY_PROXIES_FILE, read by
GatewayConfig); --proxy and --proxies-file replace them.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any, ClassVar

from scrapy.commands import ScrapyCommand
from scrapy.exceptions import UsageError

from scrapy_gateway.commands.check_output import as_json, as_text, exit_status
from scrapy_gateway.config import ConfigError, GatewayConfig, read_proxies
from scrapy_gateway.core.diagnosis import Rules, diagnose
from scrapy_gateway.core.proxies import Proxy
from scrapy_gateway.masking import CredentialMask
from scrapy_gateway.probe import Target, probe_all

DEFAULT_TIMEOUT = 10.0  # seconds per path; a project's shorter DOWNLOAD_TIMEOUT wins
DEFAULT_CONCURRENCY = 8
DEFAULT_PER_SITE = 2


class Command(ScrapyCommand):
    requires_project = False
    requires_crawler_process = False
    default_settings: ClassVar[dict[str, Any]] = {"LOG_ENABLED": False}

    def syntax(self) -> str:
        return "[options] URL [URL ...]"

    def short_desc(self) -> str:
        return "Fetch URLs directly and through every proxy; say whose fault each failure is"

    def long_desc(self) -> str:
        return (
            "Fetch each URL directly and through every proxy (the project's GATEWAY_PROXIES, or "
            "--proxy/--proxies-file) and show, per path, the status, the DNS/connect/TLS/first-byte/total "
            "timings, the evidence headers and a verdict, with the gateway's own classification. "
            "Exit status 0 when some path reaches every URL, 1 when a URL is reached by no path."
        )

    def add_options(self, parser: argparse.ArgumentParser) -> None:
        super().add_options(parser)
        parser.add_argument(
            "--proxy",
            action="append",
            default=[],
            metavar="URL",
            help="check through this proxy (repeatable); replaces the project's proxies",
        )
        parser.add_argument(
            "--proxies-file", metavar="FILE", help="check through the proxies in FILE (one a line, # comments)"
        )
        parser.add_argument("--no-direct", action="store_true", help="do not fetch the URLs directly")
        parser.add_argument(
            "--timeout",
            type=float,
            metavar="SECONDS",
            help=f"per path (default: DOWNLOAD_TIMEOUT, at most {DEFAULT_TIMEOUT:g})",
        )
        parser.add_argument(
            "--concurrency",
            type=int,
            default=DEFAULT_CONCURRENCY,
            metavar="N",
            help=f"paths fetched at once (default {DEFAULT_CONCURRENCY})",
        )
        parser.add_argument(
            "--per-site",
            type=int,
            default=DEFAULT_PER_SITE,
            metavar="N",
            help=f"paths fetched at once from one site (default {DEFAULT_PER_SITE})",
        )
        parser.add_argument("--json", action="store_true", help="print a JSON document instead of the table")

    def run(self, args: list[str], opts: argparse.Namespace) -> None:
        assert self.settings is not None
        if not args:
            raise UsageError("give at least one URL to check")
        targets = []
        for url in args:
            try:
                targets.append(Target.parse(url))
            except ValueError as exc:
                raise UsageError(f"URL {CredentialMask().text(str(exc))}", print_help=False) from None
        try:
            config = GatewayConfig.from_settings(self.settings)
        except ConfigError as exc:
            raise UsageError(str(exc), print_help=False) from None
        proxies = _proxies_from_options(opts) if opts.proxy or opts.proxies_file else list(config.proxies)
        if opts.no_direct and not proxies:
            raise UsageError("--no-direct with no proxy leaves nothing to check", print_help=False)
        if not proxies:
            # On stderr, so that --json's output stays one document.
            sys.stderr.write(
                "gateway-check: no proxies (GATEWAY_PROXIES and GATEWAY_PROXIES_FILE are empty, no --proxy or "
                "--proxies-file): checking the direct path only\n"
            )
        timeout = opts.timeout if opts.timeout is not None else self._default_timeout()
        if not timeout > 0:
            raise UsageError(f"--timeout: expected seconds > 0, got {opts.timeout!r}", print_help=False)
        for option, value in (("--concurrency", opts.concurrency), ("--per-site", opts.per_site)):
            if value < 1:
                raise UsageError(f"{option}: expected an integer >= 1, got {value!r}", print_help=False)
        probes = asyncio.run(
            probe_all(
                targets,
                proxies,
                direct=not opts.no_direct,
                timeout=timeout,
                concurrency=opts.concurrency,
                per_site=opts.per_site,
                user_agent=str(self.settings.get("USER_AGENT") or "scrapy-gateway"),
                auth_encoding=str(self.settings.get("HTTPPROXY_AUTH_ENCODING") or "latin-1"),
            )
        )
        diagnoses = diagnose(probes, Rules(config.http_codes, config.retry_after_max), time.time())
        output = as_json(diagnoses) if opts.json else as_text(diagnoses)
        # Names are already masked (Proxy.masked); this catches a password anywhere else, a URL's too.
        sys.stdout.write(CredentialMask.from_proxies(proxies).text(output) + "\n")
        sys.stdout.flush()
        self.exitcode = exit_status(diagnoses)

    def _default_timeout(self) -> float:
        assert self.settings is not None
        try:
            download_timeout = float(self.settings.getfloat("DOWNLOAD_TIMEOUT"))
        except ValueError:
            return DEFAULT_TIMEOUT
        return min(download_timeout, DEFAULT_TIMEOUT) if download_timeout > 0 else DEFAULT_TIMEOUT


def _proxies_from_options(opts: argparse.Namespace) -> list[Proxy]:
    """--proxy entries, then --proxies-file's; errors name the option and the entry."""
    try:
        return read_proxies(opts.proxy, opts.proxies_file, list_name="--proxy", file_name="--proxies-file")
    except ConfigError as exc:
        raise UsageError(str(exc), print_help=False) from None
