"""proxies.py: parsing, identity, masking; the password never leaks."""

from __future__ import annotations

import traceback
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from scrapy_gateway.core.proxies import (
    Proxy,
    ProxyListError,
    mask_url,
    parse_proxies,
    parse_proxy,
    split_proxy_text,
)

SECRET = "s3cr3tPW"


def test_parse_full_entry():
    proxy = parse_proxy(f"  http://alice:{SECRET}@proxy.example:8080  ")
    assert (proxy.scheme, proxy.host, proxy.port, proxy.username, proxy.password) == (
        "http",
        "proxy.example",
        8080,
        "alice",
        SECRET,
    )
    assert proxy.url == f"http://alice:{SECRET}@proxy.example:8080"
    assert proxy.key == "http://alice@proxy.example:8080"
    assert proxy.masked == "http://alice:***@proxy.example:8080"
    assert SECRET not in repr(proxy)


@pytest.mark.parametrize(
    ("entry", "key"),
    [
        ("http://proxy.example", "http://proxy.example:80"),
        ("https://proxy.example", "https://proxy.example:443"),
        ("HTTP://Proxy.EXAMPLE:3128", "http://proxy.example:3128"),
        ("http://proxy.example:3128/", "http://proxy.example:3128"),
        ("http://10.0.0.1:8080", "http://10.0.0.1:8080"),
    ],
)
def test_identity_normalises_scheme_host_and_default_port(entry, key):
    proxy = parse_proxy(entry)
    assert proxy.key == key
    assert proxy.masked == key  # no credentials: nothing to mask


def test_sub_users_are_distinct_proxies():
    one = parse_proxy("http://customer-session-1:pw@gw.example:7777")
    two = parse_proxy("http://customer-session-2:pw@gw.example:7777")
    assert one.key != two.key
    assert one != two
    assert one.key == "http://customer-session-1@gw.example:7777"


def test_password_is_not_part_of_identity():
    one = parse_proxy("http://bob:first@gw.example:7777")
    two = parse_proxy("http://bob:second@gw.example:7777")
    assert one.key == two.key
    assert one.masked == two.masked == "http://bob:***@gw.example:7777"


def test_percent_encoded_credentials_are_decoded():
    proxy = parse_proxy("http://us%40er:p%3A%2Fss@gw.example:1")
    assert proxy.username == "us@er"
    assert proxy.password == "p:/ss"
    assert "p:/ss" not in proxy.key
    assert "p:/ss" not in proxy.masked


def test_username_only_and_password_only():
    user_only = parse_proxy("http://bob@gw.example:1")
    assert user_only.key == "http://bob@gw.example:1"
    assert user_only.password == ""
    pw_only = parse_proxy(f"http://:{SECRET}@gw.example:1")
    assert pw_only.key == "http://gw.example:1"
    assert SECRET not in pw_only.masked
    assert "***" in pw_only.masked


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (f"alice:{SECRET}@proxy.example:8080", "no scheme"),
        ("proxy.example:8080", "no scheme"),
        (f"socks5://alice:{SECRET}@proxy.example:1080", "not supported"),
        (f"ftp://alice:{SECRET}@proxy.example:21", "not supported"),
        (f"http://alice:{SECRET}@:8080", "no host"),
        ("http://", "no host"),
        (f"http://alice:{SECRET}@proxy.example:99999", "not a valid URL"),
        (f"http://alice:{SECRET}@proxy.example:abc", "not a valid URL"),
        (f"http://alice:{SECRET}@[proxy.example:80", "not a valid URL"),
        (f"http://alice:{SECRET}@proxy.example:8080/path", "must not have a path"),
        (f"http://alice:{SECRET}@proxy.example:8080?x=1", "must not have a path"),
        (f"http://alice:{SECRET}@proxy.example:8080#frag", "must not have a path"),
    ],
)
def test_bad_entries_raise_with_masked_message(entry, words):
    with pytest.raises(ProxyListError) as info:
        parse_proxy(entry)
    message = str(info.value)
    assert words in message
    assert SECRET not in message
    if SECRET in entry:
        assert "alice:***@" in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    "entry",
    [f"http://alice:{SECRET}/x@proxy.example:80", f"http://alice:{SECRET}\uff03@proxy.example:80"],
)
def test_traceback_of_parse_error_does_not_show_the_password(entry):
    with pytest.raises(ProxyListError) as info:
        parse_proxy(entry)
    assert SECRET not in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_schemeless_entry_with_scheme_like_password_is_masked():
    with pytest.raises(ProxyListError) as info:
        parse_proxy("alice:pass://word@gw.example:8080")
    assert "pass://word" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        (f"http://alice:{SECRET}@h:1", "http://alice:***@h:1"),
        (f"alice:{SECRET}@h:1", "alice:***@h:1"),
        (f"http://alice:p@ss{SECRET}@h:1", "http://alice:***@h:1"),
        ("http://h:1", "http://h:1"),
        ("nothing to mask", "nothing to mask"),
    ],
)
def test_mask_url(url, masked):
    assert mask_url(url) == masked


def test_split_proxy_text():
    text = "\n".join(
        [
            "# provider A",
            "http://a:1, http://b:2",
            "",
            "   ",
            "  # indented comment, with a comma",
            "  http://c:3  ",
            "http://d:4,,http://e:5,",
            "#http://commented.example:6",
        ]
    )
    assert split_proxy_text(text) == ["http://a:1", "http://b:2", "http://c:3", "http://d:4", "http://e:5"]


def test_split_proxy_text_handles_crlf_and_empty():
    assert split_proxy_text("http://a:1\r\nhttp://b:2\r\n") == ["http://a:1", "http://b:2"]
    assert split_proxy_text("") == []
    assert split_proxy_text("# only a comment\n\n") == []


def test_split_keeps_hash_inside_an_entry():
    # Only whole-line comments are dropped: '#' may be part of a password.
    assert split_proxy_text("http://u:p#w@h:1") == ["http://u:p#w@h:1"]


def test_parse_proxies_dedupes_by_identity_keeping_the_first():
    proxies = parse_proxies(
        [
            "http://h.example:80",
            "http://H.example",
            "http://h.example:80/",
            "http://u:x@h.example",
            "http://u:y@h.example",
        ],
        source="test",
    )
    assert [p.key for p in proxies] == ["http://h.example:80", "http://u@h.example:80"]
    assert proxies[0].url == "http://h.example:80"
    assert proxies[1].password == "x"
    assert all(isinstance(p, Proxy) for p in proxies)


def test_parse_proxies_names_source_and_entry_number():
    with pytest.raises(ProxyListError) as info:
        parse_proxies(
            ["http://ok.example:1", "http://ok2.example:2", f"alice:{SECRET}@bad:3"], source="GATEWAY_PROXIES"
        )
    message = str(info.value)
    assert message.startswith("GATEWAY_PROXIES, entry 3: ")
    assert SECRET not in message
    assert SECRET not in "".join(traceback.format_exception(info.value))


def test_parse_proxies_empty():
    assert parse_proxies([], source="x") == []


# -- property: the password never shows -------------------------------------------------------------

USERS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
HOST = "gw.provider.example"
# The fixed words of parse_proxy's messages: a "password" made of them proves nothing.
BOILERPLATE = (
    "proxy has no scheme; write it as http://host:port is not a valid URL: port out of range or malformed "
    "scheme is not supported (use http or https) has no host must not have a path, query or fragment "
    "Proxy(scheme= host= port= username=)"
)


def _fair(password: str, user: str, extra: str = "") -> bool:
    """The password can only be 'found' if it is not also part of the non-secret text."""
    # The masked URL's own shape too: a password of ":***" is "shown" by http://user:***@host.
    visible = f"http https socks5 http://{user}:***@{HOST}:8080 99999 ***{extra} {BOILERPLATE}"
    return len(password) >= 4 and password not in visible


@settings(max_examples=200, deadline=None)
@given(USERS, st.text(min_size=4, max_size=24))
def test_valid_entry_never_exposes_the_password(user, password):
    encoded = quote(password, safe="")
    assume(_fair(password, user) and _fair(encoded, user))
    proxy = parse_proxy(f"http://{user}:{encoded}@{HOST}:8080")
    assert proxy.password == password
    for shown in (proxy.key, proxy.masked, repr(proxy)):
        assert password not in shown
        assert encoded not in shown


ERROR_TEMPLATES = [
    "{user}:{pw}@{host}:8080",  # no scheme
    "socks5://{user}:{pw}@{host}:8080",  # unsupported scheme
    "http://{user}:{pw}@:8080",  # no host
    "http://{user}:{pw}@{host}:99999",  # bad port
    "http://{user}:{pw}@{host}:8080/proxy",  # path
]


@settings(max_examples=300, deadline=None)
@given(USERS, st.text(min_size=4, max_size=24), st.sampled_from(ERROR_TEMPLATES), st.booleans())
def test_error_messages_never_expose_the_password(user, password, template, encode):
    written = quote(password, safe="") if encode else password
    assume(_fair(password, user) and _fair(written, user))
    entry = template.format(user=user, pw=written, host=HOST)
    try:
        proxy = parse_proxy(entry)
    except ProxyListError as exc:
        message = str(exc)
        assert password not in message
        assert written not in message
        return
    # A raw password with URL delimiters can turn a bad entry into a valid one; it must still be hidden.
    assert password not in proxy.key
    assert password not in proxy.masked
