"""Prefix honesty: a scan that finds nothing under the configured prefix says where buffers are.

Laravel prepends a prefix to every key, derived from APP_NAME when REDIS_PREFIX is
unset, and the rule changed between versions. genbuf never guesses it; when the
configured prefix sees no buffer while buffers exist under another, the command
fails (exit 1) naming the prefix to set, instead of reporting "nothing to do".
"""

from __future__ import annotations

from genbuffer.documents import Document
from genbuffer.errors import WrongPrefix
from genbuffer.redis import GenerationBuffer
from genbuffer.settings import laravel_slug

__all__ = ["PrefixReport", "check_prefix", "misplaced", "prefix_report"]


class PrefixReport(Document):
    """Where buffers live: under the configured prefix, and under others (key counts)."""

    configured: str
    buffers_here: bool
    elsewhere: dict[str, int]


def prefix_report(buffer: GenerationBuffer) -> PrefixReport:
    """Look for buffers under the configured prefix and, when there are none, elsewhere."""
    here = buffer.scan.has_buffers()
    return PrefixReport(
        configured=buffer.prefix,
        buffers_here=here,
        elsewhere={} if here else buffer.scan.other_prefixes(),
    )


def check_prefix(buffer: GenerationBuffer) -> PrefixReport:
    """Raise WrongPrefix when no buffer is under the configured prefix but some are elsewhere."""
    report = prefix_report(buffer)
    if error := _wrong_prefix(report, buffer.app_name):
        raise error
    return report


def misplaced(buffer: GenerationBuffer, found: int) -> tuple[dict[str, int], WrongPrefix | None]:
    """For a survey that found ``found`` buffers under the prefix (status, metrics): when
    none, the other prefixes that hold buffers (key counts, the five largest) and the
    WrongPrefix naming them; else nothing (no second scan)."""
    if found:
        return {}, None
    report = prefix_report(buffer)
    error = _wrong_prefix(report, buffer.app_name)
    return dict(_ranked(report.elsewhere)[:5]) if error else {}, error


def _ranked(elsewhere: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(elsewhere.items(), key=lambda item: (-item[1], item[0]))


def _wrong_prefix(report: PrefixReport, app_name: str | None) -> WrongPrefix | None:
    """The error of a report with no buffer under the prefix and some elsewhere."""
    if report.buffers_here or not report.elsewhere:
        return None
    ranked = _ranked(report.elsewhere)
    best = ranked[0][0]
    shown = ", ".join(f"{p!r} ({n} keys)" for p, n in ranked[:5])
    return WrongPrefix(
        f"no buffer under the configured key prefix {report.configured!r}, "
        f"but buffers exist under {shown}",
        hint=f"set REDIS_PREFIX={best}" + _rule_hint(best, app_name),
    )


def _rule_hint(prefix: str, app_name: str | None) -> str:
    """Name the Laravel rule that derives ``prefix`` from APP_NAME, when one does."""
    app = app_name or "laravel"
    rules = {
        laravel_slug(app, "_") + "_database_": "underscore",
        laravel_slug(app, "-") + "-database-": "hyphen",
    }
    rule = rules.get(prefix)
    return f" (or REDIS_PREFIX_RULE={rule}, Laravel's rule for APP_NAME={app!r})" if rule else ""
