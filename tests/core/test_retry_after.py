"""retry_after.py: delta-seconds or HTTP-date, capped, never raising."""

from __future__ import annotations

from datetime import timezone
from email.utils import formatdate

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scrapy_gateway.core.retry_after import parse_retry_after

NOW = 1_700_000_000.0  # a whole second, so HTTP-dates (second precision) round-trip exactly
CAP = 300.0


def http_date(epoch: float) -> str:
    return formatdate(epoch, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("1", 1.0),
        ("120", 120.0),
        (" 120 ", 120.0),
        ("\t7\t", 7.0),
        ("007", 7.0),
        ("300", 300.0),
        ("301", CAP),
        ("9999999999", CAP),  # ten digits: capped
    ],
)
def test_delta_seconds(value, expected):
    assert parse_retry_after(value, NOW, CAP) == expected


@pytest.mark.parametrize(
    "value",
    [None, "", "soon", "1.5", "-5", "- 5", "+5", "5s", "0x10", "1e3", "5 5", "Wed, 99 Foo 2015 25:61:00 GMT", "GMT"],
)
def test_absent_or_malformed_is_none(value):
    assert parse_retry_after(value, NOW, CAP) is None


def test_http_date_in_the_future():
    assert parse_retry_after(http_date(NOW + 90), NOW, CAP) == 90.0
    assert parse_retry_after("  " + http_date(NOW + 90) + "  ", NOW, CAP) == 90.0


def test_http_date_in_the_past_means_now():
    assert parse_retry_after(http_date(NOW - 3600), NOW, CAP) == 0.0


def test_http_date_far_future_is_capped():
    assert parse_retry_after(http_date(NOW + 10 * CAP), NOW, CAP) == CAP
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", NOW, CAP) == CAP


def test_http_date_uses_the_given_clock():
    date = http_date(NOW + 60)
    assert parse_retry_after(date, NOW + 45, CAP) == 15.0


def test_rfc850_date_is_accepted():
    assert parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", 784_111_777.0 - 30, CAP) == 30.0


def test_date_with_minus_zero_zone_is_read_as_gmt():
    # RFC 9110 dates are all GMT, so a zone-less or "-0000" date is read as GMT (784111777).
    assert parse_retry_after("Sun, 06 Nov 1994 08:49:37 -0000", 784111777 - 10.0, 1e12) == 10.0


def test_huge_delta_seconds_is_capped():
    assert parse_retry_after("99999999999", NOW, CAP) == CAP


def test_asctime_date_is_accepted():
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", 784_111_777.0 - 30, CAP) == 30.0


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.none(), st.text(), st.from_regex(r"\A\s*[0-9]{1,14}\s*\Z")), st.floats(0, 4e9), st.floats(0, 1e6))
def test_never_raises_and_stays_in_range(value, now, cap):
    result = parse_retry_after(value, now, cap)
    assert result is None or 0.0 <= result <= cap


@settings(max_examples=100, deadline=None)
@given(st.datetimes(timezones=st.just(timezone.utc)), st.floats(1.0, 1e5))
def test_any_http_date_is_within_cap(when, cap):
    value = when.strftime("%a, %d %b %Y %H:%M:%S GMT")
    result = parse_retry_after(value, NOW, cap)
    assert result is not None
    assert 0.0 <= result <= cap


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 9_999_999_999), st.floats(0.0, 1e6, allow_nan=False))
def test_delta_seconds_property(seconds, cap):
    assert parse_retry_after(str(seconds), NOW, cap) == min(float(seconds), cap)
