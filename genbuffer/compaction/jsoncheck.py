"""Whether bytes are one JSON document, checked as they stream, in bounded memory.

An artifact over GENERATION_PARSE_MAX_BYTES is not parsed into a document (that
holds several times its size), but strict mode must still refuse one that is
not JSON. ijson's C backend (yajl) checks the bytes a slice at a time and keeps
only its parser's state: the nesting and the token in progress. Memory is
bounded by the longest single string of the document, never by its size.

Two details keep the check exact:
- yajl reports where the bytes it was handed failed only as the text around that
  place, so the bytes go in slices of SLICE bytes (absolute), and an error is placed
  where yajl stopped (``near byte N``: N bytes read, the offending one the last of
  them or the next) at the one place in its slice whose surroundings are that text
  (``_place``), or, where several places fit, named by its slice;
- yajl takes a string left open after a complete document for one still
  arriving, and its end for the end (``[] "abc`` passes): ``close`` hands it a
  quote and a letter first, which close such a string (trailing garbage), and
  after a valid document only open a string of their own (see ``_END``);
- ijson converts every number it meets, and an integer of more than 4,300 digits
  (Python's int_max_str_digits) or an exponent of more than 17 fails that
  conversion. A run of digits is the same JSON, valid or not, with its digits
  past MAX_DIGITS left out (in a string it stays a string; a number keeps its
  first digit, so a leading zero stays one), so longer runs are shortened before
  yajl sees them.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable
from types import SimpleNamespace
from typing import Any

__all__ = ["SLICE", "JsonStream", "blocks_are_json", "json_error_of"]

SLICE = 64 * 1024  # bytes handed to the parser at a time: an error's place is looked for in one
# a run of digits is shortened to this many before the parser sees it: an exponent of
# 17 digits is still within what decimal.Decimal takes (18 are not)
MAX_DIGITS = 16
_DIGITS = b"0123456789"
_LONG_RUN = re.compile(rb"[0-9]{%d,}" % (MAX_DIGITS + 1))
# every digit to "0", every other byte to "x": a long run is then a plain substring,
# found at memchr speed (the regex alone scans at a few tens of MB/s)
_DIGITS_ONLY = bytes(0x30 if 0x30 <= b <= 0x39 else 0x78 for b in range(256))
_RUN_MARK = b"0" * (MAX_DIGITS + 1)
# Sent before the end. After a valid document: an open string, harmless. After a
# document and an open string: closes it, then trailing garbage. Inside a document:
# it cannot complete one (closing a top-level string leaves the letter as garbage).
# A document ending in a backslash, which would escape the quote, is never valid.
_END = b'"x'


def _parser() -> tuple[Any, type[Exception]]:
    """A push parser whose events are dropped (only the check matters), and the error it
    raises for bytes that are not JSON: yajl's C backend where the wheel has it, else
    ijson's pure-Python one (slower, same verdict)."""
    import ijson  # noqa: PLC0415  (only compactions of large artifacts need it)

    try:
        backend = ijson.get_backend("yajl2_c")
    except ImportError:  # pragma: no cover - every platform genbuf is tested on has it
        backend = ijson
    sink = SimpleNamespace(send=deque(maxlen=0).append)  # a C-level no-op target
    error: type[Exception] = ijson.JSONError
    return backend.basic_parse_coro(sink), error


class JsonStream:
    """Feed blocks in order, then ``close``; ``error`` is None for one valid document."""

    def __init__(self) -> None:
        self._parser, self._invalid = _parser()
        self._run = 0  # digits at the end of what the parser was handed so far
        self._last = b""  # the last byte fed
        self.error: str | None = None

    def feed(self, block: bytes, offset: int) -> None:
        """The next bytes of the document, which start at byte ``offset``."""
        if block:
            self._last = block[-1:]
        view = memoryview(block)
        start = 0
        while start < len(view) and self.error is None:
            # pieces end on multiples of SLICE (absolute), so the slice an error is
            # placed in does not depend on how the bytes were paged
            aligned = (offset + start) // SLICE * SLICE
            end = min(len(view), aligned + SLICE - offset)
            piece = bytes(view[start:end])
            shortened = self._shortened(piece)
            piece_start, start = offset + start, end
            if not shortened:  # all digits of a run already cut (empty would end the parse)
                continue
            try:
                self._parser.send(shortened)
            except self._invalid as exc:
                at = _place(exc, shortened) if shortened == piece else None
                where = (
                    f"near byte {piece_start + at}"
                    if at is not None
                    else f"between bytes {aligned} and {aligned + SLICE - 1}"
                )
                self.error = f"{_reason(exc)} ({where})"

    def close(self, size: int) -> None:
        """The document ends at ``size`` bytes: a value still open is an error there."""
        if self.error is not None:
            return
        if self._last == b"\\":
            self.error = f"parse error: premature EOF (at byte {size}, the end)"
            return
        try:
            self._parser.send(_END)
            self._parser.close()
        except self._invalid as exc:
            self.error = f"{_reason(exc)} (at byte {size}, the end)"

    def _shortened(self, piece: bytes) -> bytes:
        """``piece`` with every run of digits (across pieces too) cut to MAX_DIGITS."""
        if self._run:
            lead = len(piece) - len(piece.lstrip(_DIGITS))
            keep = min(lead, MAX_DIGITS - self._run)
            if lead == len(piece):
                self._run += keep
                return piece[:keep]
            piece = piece[:keep] + piece[lead:]
        if len(piece) > MAX_DIGITS and _RUN_MARK in piece.translate(_DIGITS_ONLY):
            piece = _LONG_RUN.sub(lambda match: match[0][:MAX_DIGITS], piece)
        self._run = len(piece) - len(piece.rstrip(_DIGITS))
        return piece


def _reason(exc: Exception) -> str:
    """yajl's first line (``parse error: premature EOF``), without the document's text
    that its next lines quote: issue rows and logs never copy the content."""
    text = exc.args[0] if exc.args else ""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    first = str(text).strip().splitlines()[0] if str(text).strip() else type(exc).__name__
    return first.rstrip(".")


def _context(piece: bytes, at: int) -> bytes:
    """The line yajl's verbose error draws around byte ``at`` of ``piece`` (its
    yajl_render_error_string): the error at column 40, up to 30 bytes either side,
    line breaks as spaces."""
    start = max(0, at - 30)
    text = piece[start : min(len(piece), at + 30)].replace(b"\n", b" ").replace(b"\r", b" ")
    return b" " * (40 - at if at < 30 else 10) + text


def _place(exc: Exception, piece: bytes) -> int | None:
    """Where in ``piece`` yajl stopped, from the text its error quotes around that place:
    the one byte whose surroundings are that text, or None when none or several are."""
    text = exc.args[0] if exc.args else ""
    lines = text.splitlines() if isinstance(text, bytes) else str(text).encode().splitlines()
    if len(lines) < 3 or not lines[2].rstrip().endswith(b"^"):
        return None
    quoted = lines[1]
    fits = [at for at in range(len(piece) + 1) if _context(piece, at) == quoted]
    return fits[0] if len(fits) == 1 else None


def json_error_of(data: bytes) -> str | None:
    """Where ``data``, held in memory, stops being one JSON document (None: it is one),
    checked a slice at a time: no document is built, whatever its size."""
    stream = JsonStream()
    stream.feed(data, 0)
    stream.close(len(data))
    return stream.error


def blocks_are_json(blocks: Iterable[bytes]) -> bool:
    """Whether ``blocks``, read in order and never held together, are one JSON document
    (stopping at the first block past an error)."""
    stream = JsonStream()
    size = 0
    for block in blocks:
        stream.feed(block, size)
        size += len(block)
        if stream.error is not None:
            return False
    stream.close(size)
    return size > 0 and stream.error is None
