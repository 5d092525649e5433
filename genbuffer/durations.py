"""Durations as operators type them (``30m``, ``7d``) and as status prints them."""

from __future__ import annotations

import re
from datetime import timedelta

from genbuffer.errors import UsageError

__all__ = ["human_duration", "parse_age"]

_AGE = re.compile(r"\s*([0-9]+)\s*([smhdw]?)\s*")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks", "": "days"}


def parse_age(text: str) -> timedelta:
    """Parse an age like ``7d``, ``12h``, ``30m``, ``2w`` or ``90s`` (a bare number is days)."""
    match = _AGE.fullmatch(text)
    if match is None or int(match.group(1)) == 0:
        raise UsageError(f"invalid age {text!r}", hint="use a positive number with s, m, h, d or w")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


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
