"""Proxy URLs: parsing, identity and masking.

A proxy's identity is scheme, username, host and port: the sub-users of one provider gateway are
different exits, so they are different proxies. The password is a credential, never an identity,
and never leaves this module except inside `url` (which only Scrapy's HttpProxyMiddleware reads).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def netloc_host(host: str) -> str:
    """A host as a URL's authority writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host


class ProxyListError(ValueError):
    """A proxy entry that cannot be used; the message shows the entry with its password masked."""


@dataclass(frozen=True, slots=True)
class Proxy:
    scheme: str
    host: str
    port: int
    username: str = ""
    password: str = field(default="", repr=False)
    url: str = field(default="", repr=False, compare=False)  # as given, credentials included
    # Identity: stable, credential-free, safe for logs and stats. Computed once: every selection
    # and every outcome looks it up.
    key: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        user = f"{self.username}@" if self.username else ""
        object.__setattr__(self, "key", f"{self.scheme}://{user}{self._netloc_host}:{self.port}")

    @property
    def _netloc_host(self) -> str:
        return netloc_host(self.host)

    @property
    def masked(self) -> str:
        if not self.username and not self.password:
            return self.key
        return f"{self.scheme}://{self.username}:***@{self._netloc_host}:{self.port}"


def mask_url(url: str) -> str:
    """Hide the password of any URL, even one that does not parse as a proxy."""
    match = _SCHEME.match(url)
    scheme, sep, rest = (match.group(1), "://", url[match.end() :]) if match else ("", "", url)
    userinfo, at, hostpart = rest.rpartition("@")
    if not at:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{hostpart}"


def parse_proxy(entry: str) -> Proxy:
    text = entry.strip()
    shown = mask_url(text)
    if "://" not in text:
        raise ProxyListError(f"proxy {shown!r} has no scheme; write it as http://host:port")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        # from None: urllib's message quotes the raw netloc, password included
        raise ProxyListError(f"proxy {shown!r} is not a valid URL: port out of range or malformed") from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise ProxyListError(f"proxy {shown!r}: scheme {scheme!r} is not supported (use http or https)")
    if not parts.hostname:
        raise ProxyListError(f"proxy {shown!r} has no host")
    if port == 0:
        raise ProxyListError(f"proxy {shown!r} has port 0")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ProxyListError(f"proxy {shown!r} must not have a path, query or fragment")
    return Proxy(
        scheme=scheme,
        host=parts.hostname,
        port=port if port is not None else DEFAULT_PORTS[scheme],
        username=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
        url=text,
    )


def split_proxy_text(text: str) -> list[str]:
    """Entries of a proxy list: one per line or comma-separated; blank lines and # comments go."""
    entries: list[str] = []
    for line in text.splitlines():
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        for item in line.split(","):
            if item.strip():
                entries.append(item.strip())
    return entries


def parse_proxies(entries: Iterable[str], *, source: str) -> list[Proxy]:
    """Parse and de-duplicate by identity; errors name the source and the 1-based entry."""
    proxies: dict[str, Proxy] = {}
    for number, entry in enumerate(entries, start=1):
        try:
            proxy = parse_proxy(entry)
        except ProxyListError as exc:
            raise ProxyListError(f"{source}, entry {number}: {exc}") from None
        proxies.setdefault(proxy.key, proxy)
    return list(proxies.values())
