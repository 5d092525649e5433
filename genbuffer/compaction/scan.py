"""A compaction's one streamed pass over the artifact it will write.

What the row holds, then the new chunks page by page, are hashed, counted and
checked (UTF-8, and JSON as they stream: ``genbuffer.compaction.jsoncheck``) once,
and kept only while they stay under a limit: a 1 GB artifact on its way to the
object store costs a small prefix in memory, not its size. Bytes too many to hold
while scanning but few enough to hold afterwards are read again (``collected``).
"""

from __future__ import annotations

import codecs
import hashlib
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace

from genbuffer.compaction.jsoncheck import JsonStream, json_error_of
from genbuffer.errors import StreamChanged

__all__ = [
    "SCAN_KEEP",
    "STREAM_FIRST_PAGE",
    "STREAM_PAGE_BYTES",
    "Scanned",
    "check_held",
    "collected",
    "scan",
]

# Pages of the buffer while an artifact that may be offloaded is read: small, since the
# bytes are only passed through (hashed, checked, uploaded), never assembled.
STREAM_PAGE_BYTES = 512 * 1024
SCAN_KEEP = 1024 * 1024  # bytes a streamed scan holds; more are read again if needed
STREAM_FIRST_PAGE = 16  # chunks the snapshot brings along (it is held to the end)
UTF8_SLICE = 1024 * 1024  # the UTF-8 check decodes this much at a time (a str per slice)


@dataclass(frozen=True)
class Scanned:
    """One pass over the artifact to be written (held bytes, then the new chunks)."""

    size: int  # the whole artifact
    sha256: str
    sizes: tuple[int, ...]  # of the new chunks; only while the bytes are kept
    new_count: int
    tail: list[bytes]  # the last TAIL_CHUNKS new chunks (the row's fingerprint)
    content: bytes | None  # the whole artifact, when it stayed within the keep limit
    utf8_error: str | None  # where the bytes stop being UTF-8, if they do
    over: bool  # stopped early: past the limit with nowhere to put it
    json_error: str | None = None  # where they stop being one JSON document (check_json)


def scan(
    held: Iterable[bytes],
    pages: Iterable[list[bytes]],
    *,
    keep: int,
    tail_chunks: int,
    stop_past_keep: bool,
    check_utf8: bool,
    check_json: bool = False,
) -> Scanned:
    """Hash and count ``held`` then ``pages``, keeping the bytes while they total at most
    ``keep``; with ``stop_past_keep``, stop reading as soon as they exceed it; with
    ``check_utf8``/``check_json``, check the bytes as they pass.

    A page is joined once and handled as one block: hashing and the checks run per
    page, not per chunk (a 64 MB artifact may be half a million chunks)."""
    hasher = hashlib.sha256()
    checker = _Utf8() if check_utf8 else None
    json_stream = JsonStream() if check_json else None
    kept: list[bytes] | None = []
    sizes: list[int] = []
    tail: deque[bytes] = deque(maxlen=tail_chunks)
    size = count = 0

    def take(block: bytes) -> None:
        nonlocal size, kept
        hasher.update(block)
        if checker is not None:
            checker.feed(block, size)
        if json_stream is not None:
            json_stream.feed(block, size)
        size += len(block)
        if kept is not None:
            kept.append(block)
            if size > keep:
                kept = None  # past the limit: the bytes are streamed again when needed

    for block in held:
        take(block)
    for page in pages:
        block = b"".join(page)
        tail.extend(page[-tail_chunks:])
        count += len(page)
        if kept is not None:
            sizes.extend(map(len, page))
        del page
        take(block)
        if kept is None and stop_past_keep:
            break
    if checker is not None:
        checker.close(size)
    if json_stream is not None:
        json_stream.close(size)
    return Scanned(
        size=size,
        sha256=hasher.hexdigest(),
        sizes=tuple(sizes) if kept is not None else (),
        new_count=count,
        tail=list(tail),
        content=b"".join(kept) if kept is not None else None,
        utf8_error=None if checker is None else checker.error,
        over=kept is None and stop_past_keep,
        json_error=None if json_stream is None else json_stream.error,
    )


def collected(scanned: Scanned, held: Iterable[bytes], pages: Iterable[list[bytes]]) -> Scanned:
    """``scanned`` with its bytes, read again (they were too many to hold while scanning
    but few enough to hold now); StreamChanged if they are not the bytes scanned."""
    blocks = list(held)
    sizes: list[int] = []
    for page in pages:
        blocks.append(b"".join(page))
        sizes.extend(map(len, page))
    content = b"".join(blocks)
    del blocks
    if len(content) != scanned.size or hashlib.sha256(content).hexdigest() != scanned.sha256:
        raise StreamChanged(
            f"the buffer changed between two reads: {scanned.size} bytes, then "
            f"{len(content)} (or other bytes)",
            hint="run the compaction again",
        )
    return replace(scanned, content=content, sizes=tuple(sizes))


def check_held(content: bytes) -> tuple[str | None, str | None]:
    """(UTF-8 error, JSON error) of bytes held in memory, each checked a slice at a time
    as a streamed artifact's are (no str, no document built)."""
    checker = _Utf8()
    checker.feed(content, 0)
    checker.close(len(content))
    if checker.error is not None:
        return checker.error, None
    return None, json_error_of(content)


class _Utf8:
    """An incremental UTF-8 check that remembers the first bad byte's offset."""

    def __init__(self) -> None:
        self.decoder = codecs.getincrementaldecoder("utf-8")()
        self.error: str | None = None

    def feed(self, block: bytes, offset: int) -> None:
        view = memoryview(block)
        for start in range(0, len(view), UTF8_SLICE):
            if self.error is not None:
                return
            # the decoder's offsets count from the bytes it held back (a split character)
            held = len(self.decoder.getstate()[0])
            try:
                self.decoder.decode(view[start : start + UTF8_SLICE])
            except UnicodeDecodeError as exc:
                self.error = f"{exc.reason} at byte {offset + start + exc.start - held}"

    def close(self, offset: int) -> None:
        if self.error is None:
            try:
                self.decoder.decode(b"", final=True)
            except UnicodeDecodeError as exc:
                self.error = f"{exc.reason} at byte {offset}"
