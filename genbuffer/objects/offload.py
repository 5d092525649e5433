"""Reading a compaction's artifact in one streamed pass, and offloading it when large.

A compaction reads the artifact it will write (what the row holds, then the new
chunks, page by page) once, hashing every byte and keeping the bytes only while
they stay under a limit. What it then does depends on the size:

- up to ``GENERATION_OFFLOAD_BYTES`` (or with offloading off): the artifact goes
  into the row as before, base64 in `compacted`, parsed and validated whole;
- above it: it is streamed a second time, page by page, into a multipart upload
  to the object named after its sha256, before the row's transaction commits, and
  `compacted` holds the object's URL. Up to GENERATION_PARSE_MAX_BYTES it is
  parsed as any artifact; past that it is checked for UTF-8 and as JSON
  (``genbuffer.jsoncheck``) as it streams, and `llm_response` stays null. Memory
  stays bounded by the limit and the upload's parts, whatever the size;
  ``GENERATION_MAX_BYTES`` applies only to what is kept in the row.

An artifact once offloaded stays offloaded: new chunks appended to it are read
after the stored object's bytes, and the whole goes to a new object. The stored
object is read only once the trust boundary admits it (genbuffer.objects.boundary):
in a configured store, under the name genbuf gives that row's artifact.
"""

from __future__ import annotations

import codecs
import hashlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from genbuffer.errors import StreamChanged, UsageError
from genbuffer.jsoncheck import JsonStream, json_error_of
from genbuffer.objects.artifact import OffloadRecord, read_verified, upload
from genbuffer.objects.boundary import Boundary
from genbuffer.objects.store import Store, open_store

if TYPE_CHECKING:
    from genbuffer.settings import Settings

__all__ = [
    "HeldObject",
    "Offload",
    "OffloadPlan",
    "Scanned",
    "check_held",
    "collected",
    "content_type",
    "held_blocks",
    "scan",
]

# Pages of the buffer while an artifact that may be offloaded is read: small, since the
# bytes are only passed through (hashed, checked, uploaded), never assembled.
STREAM_PAGE_BYTES = 512 * 1024
SCAN_KEEP = 1024 * 1024  # bytes a streamed scan holds; more are read again if needed
STREAM_FIRST_PAGE = 16  # chunks the snapshot brings along (it is held to the end)
UTF8_SLICE = 1024 * 1024  # the UTF-8 check decodes this much at a time (a str per slice)


@dataclass(frozen=True)
class HeldObject:
    """An offloaded artifact a row holds, admitted by the trust boundary: its record, and
    the configured store and path it is read from."""

    record: OffloadRecord
    store: Store
    path: str

    def blocks(self) -> Iterator[bytes]:
        """The artifact's bytes, verified against its sha256 at the end."""
        return read_verified(self.store, self.path, self.record)


@dataclass(frozen=True)
class Offload:
    """Where and when artifacts are offloaded (``store`` None: never), and which stores
    an offloaded artifact may be read from (``boundary``; none by default)."""

    store: Store | None = None
    threshold: int | None = None
    compression: str = "none"
    settings: Settings | None = None
    boundary: Boundary = field(default_factory=Boundary)

    @classmethod
    def from_settings(
        cls, settings: Settings, *, always: bool = False, create: bool = True
    ) -> Offload:
        """GENERATION_OFFLOAD_URL/_BYTES/_COMPRESSION; the store opens here (a bad URL is
        a usage error before anything is read). ``always``: open the store whenever the
        URL is set, even without GENERATION_OFFLOAD_BYTES (the object commands);
        ``create`` False: a missing file:// directory is an error, not created (doctor)."""
        url = settings.generation_offload_url
        store = None
        if url is not None and (always or settings.offload_enabled()):
            _refuse_vanishing(url, settings)
            store = open_store(url, settings, create=create)
        return cls(
            store=store,
            threshold=settings.generation_offload_bytes if settings.offload_enabled() else None,
            compression=settings.generation_offload_compression,
            settings=settings,
            boundary=Boundary.from_settings(settings),
        )

    @property
    def active(self) -> bool:
        """Whether artifacts over the threshold are offloaded."""
        return self.store is not None and self.threshold is not None

    def held(self, record: OffloadRecord, organization_id: int, generation_id: int) -> HeldObject:
        """The object a row's record names, once the trust boundary admits it (else
        ObjectRefused, before anything is read)."""
        admitted = self.boundary.admit(record, organization_id, generation_id)
        if self.store is not None and admitted.root == self.store.location:
            store = self.store
        else:
            store = open_store(admitted.root.url, self.settings, create=False)
        store.ensure_inside(admitted.key)  # now, not at the first block: nothing shown yet
        return HeldObject(record, store, admitted.key)

    def plan(
        self,
        organization_id: int,
        generation_id: int,
        *,
        existing: bytes | HeldObject,
        pages: Callable[[], Iterable[list[bytes]]],
        scanned: Scanned,
        as_json: bool,
        is_json: bool = False,
    ) -> OffloadPlan:
        """The upload of an artifact too large for its row: what the row held, then the
        new chunks ``pages`` reads again, the same bytes the scan hashed. ``as_json``:
        its document goes to `llm_response`; ``is_json``: it is JSON, too large for that."""
        if self.store is None:  # the row's artifact was offloaded, but offloading is now off
            url = existing.record.url if isinstance(existing, HeldObject) else "?"
            raise UsageError(
                f"generation {generation_id}'s artifact is in an object store ({url}), and "
                "new chunks would go there too, but GENERATION_OFFLOAD_URL is not set",
                hint="set GENERATION_OFFLOAD_URL and GENERATION_OFFLOAD_BYTES",
            )

        def blocks() -> Iterator[bytes]:
            yield from held_blocks(existing)
            for page in pages():
                yield b"".join(page)

        json_text = None
        if as_json and scanned.content is not None:
            json_text = scanned.content.decode("utf-8")
        return OffloadPlan(
            store=self.store,
            organization_id=organization_id,
            generation_id=generation_id,
            blocks=blocks,
            sha256=scanned.sha256,
            size=scanned.size,
            compression=self.compression,
            content_type=content_type(as_json or is_json, scanned.utf8_error is None),
            llm_response_json=json_text,
        )


def held_blocks(existing: bytes | HeldObject) -> Iterable[bytes]:
    """The bytes the row holds, to go before the new chunks: in memory, or from the store."""
    if isinstance(existing, HeldObject):
        return existing.blocks()
    return (existing,) if existing else ()


def content_type(is_json: bool, is_utf8: bool) -> str:
    """The object's Content-Type: JSON when it parsed, text when UTF-8, else bytes
    (compactions and offload-compacted alike)."""
    if is_json:
        return "application/json"
    return "text/plain; charset=utf-8" if is_utf8 else "application/octet-stream"


def _refuse_vanishing(url: str, settings: Settings) -> None:
    """memory:// keeps objects as long as the process: rows would point at nothing once
    it ends, unless everything else is in-process too (REDIS_URL=memory://: tests, demo)."""
    from genbuffer.settings import MEMORY_REDIS_URL  # noqa: PLC0415

    in_process = (settings.redis_url or "").startswith(MEMORY_REDIS_URL)
    if url.lower().startswith("memory:") and not in_process:
        raise UsageError(
            "GENERATION_OFFLOAD_URL=memory:// keeps objects only while this command runs: "
            "rows would point at objects that are gone",
            hint="use s3://bucket/prefix or file:///path (memory:// is for in-process tests)",
        )


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


@dataclass(frozen=True)
class OffloadPlan:
    """What a compaction uploads before its row commits: the artifact's bytes, streamed
    again from where the scan read them, into the object its sha256 names."""

    store: Store
    organization_id: int
    generation_id: int
    blocks: Callable[[], Iterable[bytes]]
    sha256: str
    size: int
    compression: str
    content_type: str
    llm_response_json: str | None  # the artifact's JSON text when it was parsed, else None

    def upload(self) -> OffloadRecord:
        """Stream the bytes to the store; the record `metadata.offloaded` keeps."""
        return upload(
            self.store,
            self.organization_id,
            self.generation_id,
            self.blocks(),
            sha256=self.sha256,
            size=self.size,
            compression=self.compression,
            content_type=self.content_type,
        )
