"""Retry-After (RFC 9110 10.2.3): delta-seconds or an HTTP-date, nothing else."""

from __future__ import annotations

import re
from datetime import timezone
from email.utils import parsedate_to_datetime

_DELTA_SECONDS = re.compile(r"^\s*([0-9]+)\s*$")


def parse_retry_after(value: str | None, now_epoch: float, cap: float) -> float | None:
    """Seconds to wait, capped at `cap`; None when absent or malformed (never raises).

    A date in the past means "now" (0.0). The server's clock and ours differ, so a date is only as
    good as both clocks; that is the header's own contract.
    """
    if not value:
        return None
    match = _DELTA_SECONDS.match(value)
    if match:
        return min(float(match.group(1)), cap)
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # asctime dates carry no zone; RFC 9110 dates are all GMT
        when = when.replace(tzinfo=timezone.utc)
    try:
        seconds = when.timestamp() - now_epoch
    except (OverflowError, OSError, ValueError):
        return None
    return min(max(seconds, 0.0), cap)
