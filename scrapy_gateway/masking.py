"""Proxy credentials kept out of exceptions, whose text Scrapy logs and errbacks receive.

Download handlers write the proxy URL, password included, into their exceptions: in reactorless
mode a refused CONNECT is `DownloadFailedError("407, message='...', url='http://user:PASS@host:port'")`,
raised from aiohttp's `ClientHttpProxyError` with the same text, and Scrapy logs both, traceback
and chain, in its "Error downloading" line. A password can also appear percent-encoded (as written
in GATEWAY_PROXIES), percent-decoded (as aiohttp rebuilds the URL), or as the base64 of
`user:password` in a `Proxy-Authorization` value.

`CredentialMask.exception()` scrubs an exception and everything chained to it. It keeps the object
where it can: it masks `args` and the attributes in place, and when the class builds its text
from elsewhere (aiohttp's do) it swaps in a subclass of the same name whose text is the masked
text. So `isinstance` and `failure.check()` keep working, and other references to the exception
(the frame that is handling it) see only masked text too. Only an exception of a built-in class
(which cannot change class) with a credential in its text is replaced by a new object: a subclass
of its class when possible, else a `MaskedDownloadError`. Tracebacks are kept (their frames are
code, not text); logging prints no local variables.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import re
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus, unquote, urlsplit

from scrapy.core.downloader.handlers.http11 import TunnelError
from scrapy.exceptions import (
    CannotResolveHostError,
    DownloadConnectionRefusedError,
    DownloadTimeoutError,
    ResponseDataLossError,
)
from w3lib.http import basic_auth_header

from scrapy_gateway.errors import MaskedDownloadError

if TYPE_CHECKING:
    from scrapy import Request

    from scrapy_gateway.core.proxies import Proxy

MASK = "***"
# Any URL's password, known or not: scheme://user:PASSWORD@ (kept: scheme, user, the "@").
_USERINFO = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:'\"<>]*:)(?P<secret>[^\s/?#@'\"<>]+)(?=@)")
# Any Basic token written after an (Proxy-)Authorization name, as headers' reprs show them.
_AUTH_VALUE = re.compile(r"(?P<head>(?i:authorization)[^A-Za-z0-9]{0,8}(?i:basic)\s+)(?P<secret>[A-Za-z0-9+/]+=*)")
_BASE64_RUN = re.compile(r"[A-Za-z0-9+/]{4,}=*")
_USERINFO_SAFE = "!$&'()*+,;="  # sub-delims: what an encoder may leave unencoded in userinfo
_DEPTH = 4  # how deep attribute values (tuples, dicts, ...) are followed
# The Scrapy classes a stand-in keeps, for failure.check() (MaskedDownloadError is a DownloadFailedError).
_SCRAPY_KINDS = (
    TunnelError,
    DownloadTimeoutError,
    DownloadConnectionRefusedError,
    CannotResolveHostError,
    ResponseDataLossError,
)


def _password_forms(password: str) -> set[str]:
    """How a password can be written in text: as given, decoded, encoded, escaped."""
    forms: set[str] = set()
    for plain in {password, unquote(password)}:
        encoded = {quote(plain, safe=""), quote(plain, safe=_USERINFO_SAFE), quote_plus(plain)}
        forms |= {plain, *encoded, *(re.sub(r"%[0-9A-F]{2}", lambda m: m.group().lower(), e) for e in encoded)}
        forms |= {repr(plain)[1:-1], json.dumps(plain)[1:-1], plain.encode("unicode_escape").decode("ascii")}
        utf8 = plain.encode("utf-8")
        forms |= {repr(utf8)[2:-1], utf8.decode("latin-1")}
    return {form for form in forms if form}


def _tokens(user: str, password: str) -> set[str]:
    """Base64 `user:password`, as a Proxy-Authorization value carries it: built with w3lib's
    basic_auth_header, as HttpProxyMiddleware builds it (HTTPPROXY_AUTH_ENCODING: latin-1, or utf-8)."""
    tokens = set()
    for plain_user in {user, unquote(user)}:
        for plain_password in {password, unquote(password)}:
            for encoding in ("latin-1", "utf-8"):
                try:
                    header = basic_auth_header(plain_user, plain_password, encoding)
                except UnicodeEncodeError:
                    continue
                tokens.add(header.partition(b" ")[2].decode("ascii"))
    return tokens


def url_credentials(url: str) -> tuple[str, str] | None:
    """(user, password) as written in a URL's userinfo; None without a password."""
    _, sep, rest = url.partition("://")
    if not sep:
        return None
    userinfo, at, _ = rest.rpartition("@")
    user, colon, password = userinfo.partition(":")
    return (user, password) if at and colon and password else None


def _header_credentials(value: bytes) -> tuple[tuple[str, str] | None, str | None]:
    scheme, _, token = value.strip().partition(b" ")
    if scheme.lower() != b"basic" or not token:
        return None, None
    text_token = token.strip().decode("latin-1")
    try:
        decoded = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None, text_token
    try:
        plain = decoded.decode("utf-8")
    except UnicodeDecodeError:
        plain = decoded.decode("latin-1")
    user, colon, password = plain.partition(":")
    return ((user, password) if colon and password else None), text_token


class CredentialMask:
    """Hides known proxy passwords (in every form above) and any URL password or Basic token."""

    __slots__ = ("_credentials", "_pattern", "_tokens")

    def __init__(self, credentials: Iterable[tuple[str, str]] = (), tokens: Iterable[str] = ()) -> None:
        self._credentials = frozenset((user, password) for user, password in credentials if password)
        forms: set[str] = set()
        all_tokens = {token for token in tokens if token}
        for user, password in self._credentials:
            forms |= _password_forms(password)
            all_tokens |= _tokens(user, password)
        # Few distinct passwords (a provider's sub-users share one); tokens, one per user, are
        # looked up in a set instead of a pattern that would grow with the pool.
        self._tokens = frozenset(all_tokens)
        alternatives = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, alternatives))) if alternatives else None

    @classmethod
    def from_urls(cls, urls: Iterable[str]) -> CredentialMask:
        return cls(found for found in map(url_credentials, urls) if found)

    @classmethod
    def from_proxies(cls, proxies: Iterable[Proxy]) -> CredentialMask:
        """For a pool: each proxy's password as written in its URL and decoded."""
        credentials = []
        for proxy in proxies:
            credentials.append((proxy.username, proxy.password))
            written = url_credentials(proxy.url)
            if written:
                credentials.append(written)
        return cls(credentials)

    def with_credentials(self, credentials: Iterable[tuple[str, str]], tokens: Iterable[str] = ()) -> CredentialMask:
        """This mask plus more secrets (itself when they add nothing)."""
        new = {(u, p) for u, p in credentials if p} - self._credentials
        new_tokens = set(tokens) - self._tokens
        if not new and not new_tokens:
            return self
        return CredentialMask(self._credentials | new, self._tokens | new_tokens)

    def for_request(self, request: Request) -> CredentialMask:
        """Plus the credentials this request carries: any URL in its meta (`proxy`, a pinned
        proxy), and its Proxy-Authorization header (set by HttpProxyMiddleware)."""
        credentials = []
        tokens = []
        for value in request.meta.values():
            if isinstance(value, str) and "@" in value and "://" in value:
                found = url_credentials(value)
                if found:
                    credentials.append(found)
        for header in request.headers.getlist(b"Proxy-Authorization"):
            pair, token = _header_credentials(header)
            if pair:
                credentials.append(pair)
            if token:
                tokens.append(token)
        return self.with_credentials(credentials, tokens)

    # -- text --------------------------------------------------------------------------------

    def text(self, text: str) -> str:
        if self._pattern is not None:
            text = self._pattern.sub(MASK, text)
        if self._tokens:
            text = _BASE64_RUN.sub(lambda m: MASK if m.group() in self._tokens else m.group(), text)
        text = _USERINFO.sub(lambda m: m.group("head") + MASK, text)
        return _AUTH_VALUE.sub(lambda m: m.group("head") + MASK, text)

    def leaks(self, text: str) -> bool:
        return self.text(text) != text

    # -- exceptions --------------------------------------------------------------------------

    def exception(self, exc: BaseException) -> BaseException:
        """`exc` with no credential in its text or in anything chained to it (see the module doc).

        Usually `exc` itself, scrubbed in place; a new exception only for built-in classes."""
        return _ExceptionMasker(self).mask(exc)


def mask_exception(
    exc: BaseException,
    *,
    request: Request | None = None,
    proxy_urls: Iterable[str] = (),
    credentials: Iterable[tuple[str, str]] = (),
) -> BaseException:
    """One-off masking: the credentials of `request`, of `proxy_urls` and the given (user, password)."""
    mask = CredentialMask.from_urls(proxy_urls).with_credentials(credentials)
    if request is not None:
        mask = mask.for_request(request)
    return mask.exception(exc)


def _safe(render: Any, value: object) -> str:
    try:
        return str(render(value))
    except Exception:  # a broken __str__/__repr__ shows nothing, so it leaks nothing
        return ""


_MASKED_CLASSES: dict[type[BaseException], type[BaseException]] = {}


def _masked_str(self: BaseException) -> str:
    return str(vars(self).get("_gateway_masked_str", ""))


def _masked_repr(self: BaseException) -> str:
    return str(vars(self).get("_gateway_masked_repr", ""))


def _masked_class(cls: type[BaseException]) -> type[BaseException]:
    """A subclass of `cls` with the same name whose text is fixed at masking time."""
    if getattr(cls, "_gateway_masked", False):
        return cls
    sub = _MASKED_CLASSES.get(cls)
    if sub is None:
        namespace = {
            "__str__": _masked_str,
            "__repr__": _masked_repr,
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "_gateway_masked": True,
        }
        metaclass: Any = type(cls)  # type, or the class's own metaclass
        sub = _MASKED_CLASSES[cls] = metaclass(cls.__name__, (cls,), namespace)
    return sub


_FALLBACK_CLASSES: dict[type[BaseException], type[MaskedDownloadError]] = {}


def _fallback_class(exc: BaseException) -> type[MaskedDownloadError]:
    for kind in _SCRAPY_KINDS:
        if isinstance(exc, kind):
            cls = _FALLBACK_CLASSES.get(kind)
            if cls is None:
                name = f"Masked{kind.__name__}"
                cls = _FALLBACK_CLASSES[kind] = type(name, (MaskedDownloadError, kind), {"__module__": __name__})
            return cls
    return MaskedDownloadError


class _ExceptionMasker:
    def __init__(self, mask: CredentialMask) -> None:
        self.secrets = mask
        self.done: dict[int, BaseException] = {}

    def mask(self, exc: BaseException) -> BaseException:
        key = id(exc)
        if key in self.done:  # a cycle, or the same exception twice in a chain
            return self.done[key]
        self.done[key] = exc
        suppress = exc.__suppress_context__
        cause, context = exc.__cause__, exc.__context__
        if cause is not None and (masked := self.mask(cause)) is not cause:
            exc.__cause__ = masked
        if context is not None and (masked := self.mask(context)) is not context:
            exc.__context__ = masked
        exc.__suppress_context__ = suppress  # setting __cause__ sets it
        result = self.done[key] = self._fix(exc)
        return result

    def _leaks(self, exc: BaseException) -> bool:
        texts = [_safe(str, exc), _safe(repr, exc), _safe(repr, exc.args)]
        texts += [_safe(repr, value) for value in vars(exc).values()]
        return any(map(self.secrets.leaks, texts))

    def _fix(self, exc: BaseException) -> BaseException:
        if not self._leaks(exc):
            return exc
        masked_str, masked_repr = self.secrets.text(_safe(str, exc)), self.secrets.text(_safe(repr, exc))
        saved_attrs = dict(vars(exc))
        masked_args = self._value(exc.args, 0)
        masked_attrs = {name: self._value(value, 0) for name, value in saved_attrs.items()}
        try:
            exc.args = masked_args
            vars(exc).update(masked_attrs)
        except Exception:
            pass
        if not self._leaks(exc):
            return exc
        try:  # its text comes from elsewhere: the same object, its masked text fixed
            exc.__class__ = _masked_class(type(exc))
            vars(exc).update(_gateway_masked_str=masked_str, _gateway_masked_repr=masked_repr)
            if not self._leaks(exc):
                return exc
        except Exception:
            pass
        # A built-in class cannot change: the stand-in below replaces it, but the original stays as
        # masked as it can be made, since Python keeps it as the stand-in's __context__ (an
        # errback can read that), and OSError's text comes from fields, not args.
        if isinstance(exc, OSError):
            for name in ("strerror", "filename", "filename2"):
                with contextlib.suppress(Exception):
                    value = getattr(exc, name)
                    if isinstance(value, str):
                        setattr(exc, name, self.secrets.text(value))
        if not self._leaks(exc):
            return exc
        return self._replacement(exc, masked_str, masked_repr, masked_args, masked_attrs)

    def _replacement(
        self, exc: BaseException, text: str, text_repr: str, args: Any, attrs: dict[str, Any]
    ) -> BaseException:
        new: BaseException
        try:
            sub = _masked_class(type(exc))
            new = sub.__new__(sub)
            new.args = args
            vars(new).update(attrs, _gateway_masked_str=text, _gateway_masked_repr=text_repr)
        except Exception:
            fallback = _fallback_class(exc)(text)
            fallback.original_type = f"{type(exc).__module__}.{type(exc).__qualname__}"
            new = fallback
        if self._leaks(new):  # cannot happen with the texts fixed above; never hand out a leak
            new = MaskedDownloadError(MASK)
        new.__cause__, new.__context__ = exc.__cause__, exc.__context__
        new.__suppress_context__ = exc.__suppress_context__
        new.__traceback__ = exc.__traceback__
        return new

    def _value(self, value: Any, depth: int) -> Any:
        """`value` with credentials masked; the same object when it holds none."""
        if isinstance(value, str):
            masked = self.secrets.text(value)
            return value if masked == value else masked
        if isinstance(value, (bytes, bytearray)):
            as_text = bytes(value).decode("latin-1")
            masked = self.secrets.text(as_text)
            return value if masked == as_text else type(value)(masked.encode("latin-1"))
        if isinstance(value, BaseException):
            return self.mask(value)
        if depth < _DEPTH:
            if isinstance(value, (tuple, list)):
                items = [self._value(item, depth + 1) for item in value]
                if all(new is old for new, old in zip(items, value, strict=True)):
                    return value
                if isinstance(value, list):
                    return items
                make = getattr(type(value), "_make", None)  # a named tuple keeps its class
                try:
                    return make(items) if make is not None else type(value)(items)
                except Exception:
                    return tuple(items)
            if isinstance(value, dict):
                pairs = {self._value(k, depth + 1): self._value(v, depth + 1) for k, v in value.items()}
                unchanged = len(pairs) == len(value) and all(k in value and value[k] is v for k, v in pairs.items())
                return value if unchanged else pairs
        if self.secrets.leaks(_safe(repr, value)) or self.secrets.leaks(_safe(str, value)):
            return self.secrets.text(_safe(str, value))  # an object of its own kind: its masked text
        return value


def masked_url(url: str) -> str:
    """The Redis URL with its password (in the user part or a `password=` query) as ***."""
    parts = urlsplit(url)
    if "@" in url and "@" not in parts.netloc:
        # Not a URL urlsplit can read (redis:/:pw@host): whatever comes before the host is hidden.
        return f"{url.split(':', 1)[0]}:***@{url.rpartition('@')[2]}"
    netloc = parts.netloc
    if parts.password is not None:
        user = f"{parts.username}:***" if parts.username else ":***"
        netloc = f"{user}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{name}=***" if name.lower() == "password" else f"{name}={value}" if sep else name
        for name, sep, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    # By hand: urlunsplit drops the empty authority of unix:///path.
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
