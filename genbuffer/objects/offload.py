"""Offloading an artifact too large for its row: the store, and the upload plan.

A compaction reads the artifact it will write once, streamed
(``genbuffer.compaction.scan``); what it then does depends on the size:

- up to ``GENERATION_OFFLOAD_BYTES`` (or with offloading off): the artifact goes
  into the row as before, base64 in `compacted`, parsed and validated whole;
- above it: it is streamed a second time, page by page, into a multipart upload
  to the object named after its sha256 (``OffloadPlan``), before the row's
  transaction commits, and `compacted` holds the object's URL. Up to
  GENERATION_PARSE_MAX_BYTES it is parsed as any artifact; past that it is checked
  for UTF-8 and as JSON as it streams, and `llm_response` stays null. Memory stays
  bounded by the limit and the upload's parts, whatever the size;
  ``GENERATION_MAX_BYTES`` applies only to what is kept in the row.

An artifact once offloaded stays offloaded: new chunks appended to it are read
after the stored object's bytes, and the whole goes to a new object. The stored
object is read only once the trust boundary admits it (genbuffer.objects.boundary):
in a configured store, under the name genbuf gives that row's artifact.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from genbuffer.errors import UsageError
from genbuffer.objects.artifact import OffloadRecord, read_verified, upload
from genbuffer.objects.boundary import Boundary
from genbuffer.objects.store import Store, open_store

if TYPE_CHECKING:
    from genbuffer.settings import Settings

__all__ = [
    "HeldObject",
    "Offload",
    "OffloadPlan",
    "content_type",
    "held_blocks",
]


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
        sha256: str,
        size: int,
        is_json: bool,
        is_utf8: bool,
        json_text: str | None,
    ) -> OffloadPlan:
        """The upload of an artifact too large for its row: what the row held, then the
        new chunks ``pages`` reads again, the same bytes a scan hashed (``sha256``,
        ``size``). ``json_text``: its document, for `llm_response` (None: too large)."""
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

        return OffloadPlan(
            store=self.store,
            organization_id=organization_id,
            generation_id=generation_id,
            blocks=blocks,
            sha256=sha256,
            size=size,
            compression=self.compression,
            content_type=content_type(is_json, is_utf8),
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
