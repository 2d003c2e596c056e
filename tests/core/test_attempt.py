"""The attempt record: sending() is hand-built for speed, so it must still carry every field."""

from __future__ import annotations

import dataclasses

from scrapy_gateway.core.attempt import Attempt


def test_sending_keeps_every_field_it_does_not_set() -> None:
    # A value for every field that differs from its default, so a field dropped or shifted shows.
    before = Attempt(
        max_retries=3,
        max_proxy_retries=4,
        retries=1,
        proxy_retries=2,
        sends=5,
        proxy="old",
        pinned=True,
        tried=("a", "b"),
        sent_at=1.0,
        cuts=2,
        probe="old-probe",
        held="gate",
        final=True,
        not_before=99.0,
        scheduled=True,
        asked_partial=False,
        told_to_wait=True,
    )
    after = before.sending("new", 7.0, pinned=False, asked_partial=True, probe="p")
    expected = dataclasses.replace(
        before,
        proxy="new",
        pinned=False,
        sent_at=7.0,
        sends=6,
        not_before=None,
        asked_partial=True,
        probe="p",
        held=None,
    )
    assert after == expected
    assert len(dataclasses.fields(Attempt)) == 17, "a new field: add it to Attempt.sending() too"
