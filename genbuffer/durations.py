"""Durations as operators type them (``30m``, ``7d``) and as status prints them."""

from __future__ import annotations

import re
from datetime import timedelta

from genbuffer.errors import UsageError

__all__ = ["MAX_AGE", "human_duration", "parse_age"]

_AGE = re.compile(r"\s*([0-9]+)\s*([smhdw]?)\s*")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "": 86400}
# Past this, a date computed from the age (now - age) or a timeout built from it
# (XAUTOCLAIM's milliseconds, a thread's wait) overflows: a century is far beyond any use.
MAX_AGE = timedelta(days=36500)


def parse_age(text: str, *, bare_days: bool = False) -> timedelta:
    """Parse an age like ``7d``, ``12h``, ``30m``, ``2w`` or ``90s``, from one second to
    MAX_AGE (100 years); anything else is a UsageError. A bare number is days only where
    ``bare_days`` (purge-chunks' ``--older-than 7``, as the Artisan command took it);
    elsewhere it is refused: ``--visibility 300`` read as days waits 300 days."""
    match = _AGE.fullmatch(text)
    hint = "use a positive number with s, m, h, d or w"
    if match is None or not match.group(1).strip("0"):
        raise UsageError(f"invalid age {text!r}", hint=hint)
    digits, unit = match.group(1).lstrip("0"), match.group(2)
    if not unit and not bare_days:
        raise UsageError(
            f"age {text.strip()!r} has no unit",
            hint=f"add one: {digits}s, {digits}m, {digits}h or {digits}d",
        )
    # the length first: int() of thousands of digits is refused (or slow), not an age
    seconds = int(digits) * _UNIT_SECONDS[unit] if len(digits) <= 12 else None
    if seconds is None or seconds > MAX_AGE.total_seconds():
        shown = text.strip() if len(text.strip()) <= 24 else text.strip()[:20] + "…"
        raise UsageError(f"age {shown!r} is too long: at most {MAX_AGE.days}d (100 years)")
    return timedelta(seconds=seconds)


def human_duration(seconds: float | None) -> str:
    """``42s``, ``12m``, ``3h05m``, ``2d04h``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    whole = int(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
