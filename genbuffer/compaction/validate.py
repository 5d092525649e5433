"""2. Validate: the snapshot against the row, then the artifact to write, read once.

The row's artifact must be one genbuf can account for (its sha256, or its
offloaded object admitted by the trust boundary). The snapshot is placed against
what the row records (``placement``): a buffer that diverged is not read at all.
Otherwise the artifact to write (what the row holds, then the new chunks) is read
once, streamed (``scan``), hashed and validated (``validator``); where a new stream
meets the artifact the row holds, whether it continues or replaces it is decided
here (``LateChunks``), since that decides which bytes the artifact is.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from genbuffer.compaction import validator
from genbuffer.compaction.jsoncheck import blocks_are_json
from genbuffer.compaction.placement import TAIL_CHUNKS, Placement, RowRecord, place
from genbuffer.compaction.scan import (
    SCAN_KEEP,
    STREAM_PAGE_BYTES,
    Scanned,
    check_held,
    collected,
    scan,
)
from genbuffer.errors import ForeignArtifact
from genbuffer.objects.artifact import OffloadRecord
from genbuffer.objects.offload import HeldObject, held_blocks
from genbuffer.redis.protocol import PAGE_BYTES
from genbuffer.states import LateOutcome, LateRule

if TYPE_CHECKING:
    from genbuffer.compaction.config import CompactionConfig
    from genbuffer.compaction.read import Source
    from genbuffer.db.rows import GenerationRow
    from genbuffer.redis import GenerationBuffer

__all__ = ["Checked", "LateChunks", "Pages", "Reading", "check"]

Pages = Callable[[], Iterator[list[bytes]]]  # the new chunks, page by page, read anew per call


@dataclass(frozen=True)
class LateChunks:
    """How a new stream meets the artifact its row holds: appended or replaced, and why."""

    replaces: bool
    rule: LateRule

    @property
    def outcome(self) -> LateOutcome:
        """`replaced` or `appended`, as the row, the ledger and the message say it."""
        return LateOutcome.REPLACED if self.replaces else LateOutcome.APPENDED

    @classmethod
    def after_finished(cls, policy: str) -> LateChunks:
        """The row's stream was marked finished: a later stream is a regeneration,
        replaced or appended as GENERATION_REGENERATION says."""
        return cls(replaces=policy == "replace", rule=LateRule.FINISHED)

    @classmethod
    def after_provisional(
        cls, *, together_json: bool, alone_json: bool, late_policy: str
    ) -> LateChunks:
        """The row's stream was compacted before it was marked finished (idle, about
        to expire, or by hand): the new chunks continue it when the two parse as one
        JSON document, replace it when only the new chunks parse, and otherwise do
        what GENERATION_LATE_CHUNKS says."""
        if together_json:
            return cls(replaces=False, rule=LateRule.JSON_CONTINUES)
        if alone_json:
            return cls(replaces=True, rule=LateRule.JSON_NEW_DOCUMENT)
        return cls(replaces=late_policy == "replace", rule=LateRule.LATE_CHUNKS_SETTING)


@dataclass(frozen=True)
class Reading:
    """One read of the artifact to write (held bytes, if any, then the new chunks):
    hashed, counted, validated; the bytes when few enough to hold."""

    scanned: Scanned
    validation: validator.Validation
    offloaded: bool  # the artifact goes to (or stays in) the object store
    held_size: int  # bytes of it the row held before
    held: bytes | HeldObject  # what the row held, as it was read (before the new chunks)

    @property
    def over(self) -> bool:
        """Whether reading stopped past what may be held (an oversize artifact)."""
        return self.scanned.over


@dataclass(frozen=True)
class Checked:
    """What validation found: where the buffer stands, and the artifact as read (None:
    the buffer diverged from the row, and nothing was read)."""

    placement: Placement
    held: bytes | OffloadRecord  # what the row holds
    reading: Reading | None = None
    late: LateChunks | None = None  # set: a new stream meets the artifact the row holds
    pages: Pages | None = None  # the new chunks, for a second pass (an upload)


def check(
    source: Source, buffer: GenerationBuffer, config: CompactionConfig, *, regeneration: str
) -> Checked:
    """Place the snapshot against the row; read and validate what the artifact becomes
    (``regeneration``: GENERATION_REGENERATION, or --regeneration)."""
    row, record, snapshot = source.row, source.record, source.snapshot
    held = existing_artifact(row)
    placement = place(record, snapshot, closed=record is not None and record.closed)
    if placement.verdict is not None:
        return Checked(placement, held)
    start = max(placement.done, snapshot.trimmed)
    to_store = config.offload.active or isinstance(held, OffloadRecord)
    page_bytes = STREAM_PAGE_BYTES if to_store else PAGE_BYTES

    def pages() -> Iterator[list[bytes]]:
        """The new chunks, page by page (read again by each pass that needs them)."""
        return buffer.protocol.read(snapshot, start, snapshot.end, page_bytes=page_bytes)

    checks: dict[str, Any] = {
        "missing_chunks": max(0, snapshot.trimmed - placement.done),
        "extra_chunks": 0 if snapshot.counted is None else max(0, snapshot.end - snapshot.counted),
        "row_metadata": row.metadata,
        "schema": config.schema,
        "gaps": snapshot.gaps + placement.gaps,
    }
    if not (held and not placement.continues):  # the row's own stream, or no artifact yet
        return Checked(placement, held, _read(held, pages, config, checks, row), None, pages)
    if record is None or record.closed:
        late = LateChunks.after_finished(regeneration)
        reading = _read(b"" if late.replaces else held, pages, config, checks, row)
        return Checked(placement, held, reading, late, pages)
    # a provisional artifact: whether the new chunks continue it is in the bytes
    reading = _read(held, pages, config, checks, row)
    late = _late_chunks(reading, pages, config.late_chunks)
    if late.replaces:
        reading = _read(b"", pages, config, checks, row)
    return Checked(placement, held, reading, late, pages)


def existing_artifact(row: GenerationRow) -> bytes | OffloadRecord:
    """The bytes the row already holds, or the record of its offloaded object; refuse an
    artifact genbuf cannot account for."""
    legacy = isinstance(row.metadata, dict) and "compacted" in row.metadata
    if row.compacted is None and not legacy:
        return b""
    if RowRecord.from_metadata(row.metadata) is not None and (
        offloaded := OffloadRecord.of_row(row.compacted, row.metadata)
    ):
        return offloaded
    if RowRecord.from_metadata(row.metadata) is None or row.compacted is None:
        raise ForeignArtifact(
            f"generation {row.id} already holds an artifact that genbuf did not write",
            hint="run `genbuf migrate-compacted-from-metadata` first"
            if legacy
            else "it was compacted by another tool; nothing was changed",
        )
    try:
        data = base64.b64decode(row.compacted, validate=True)
    except (binascii.Error, ValueError):
        raise ForeignArtifact(f"generation {row.id}: compacted is not valid base64") from None
    if row.metadata.get("sha256") != hashlib.sha256(data).hexdigest():
        raise ForeignArtifact(
            f"generation {row.id}: compacted was changed outside genbuf (sha256 differs)",
            hint="nothing was changed; inspect the row before compacting it again",
        )
    return data


def _read(
    existing: bytes | OffloadRecord,
    pages: Pages,
    config: CompactionConfig,
    checks: dict[str, Any],
    row: GenerationRow,
) -> Reading:
    """Read ``existing`` and the new chunks once (twice where the bytes must be held
    but were too many to hold while hashing), then validate them. An offloaded
    ``existing`` passes the trust boundary first (ObjectRefused: nothing is read)."""
    offload = config.offload
    held: bytes | HeldObject
    if isinstance(existing, OffloadRecord):
        held = offload.held(existing, row.organization_id, row.id)
    else:
        held = existing
    to_store = offload.active or isinstance(held, HeldObject)
    held_size = held.record.bytes if isinstance(held, HeldObject) else len(held)
    scanned = _scan(held, pages, config, to_store=to_store)
    offloaded = isinstance(held, HeldObject) or (
        offload.threshold is not None and scanned.size > offload.threshold
    )
    if scanned.over or (not offloaded and scanned.size > config.max_bytes):
        issue = validator.size_issue(scanned.size, config.max_bytes)
        issues = validator.Validation((issue,) if issue else ())
        return Reading(scanned, issues, offloaded, held_size, held)
    validation = _validation(scanned, config, checks, to_store=to_store)
    return Reading(scanned, validation, offloaded, held_size, held)


def _scan(
    held: bytes | HeldObject, pages: Pages, config: CompactionConfig, *, to_store: bool
) -> Scanned:
    """One streamed pass over the artifact; its bytes held when few enough to hold."""
    offload = config.offload
    keep = max(offload.threshold or 0, config.parse_limit) if to_store else config.max_bytes
    scanned = scan(
        held_blocks(held),
        pages(),
        # streamed: hold a small prefix only, the bytes are read again when they must
        # be held (a 1 GB artifact must not cost its threshold in memory on the way)
        keep=min(keep, SCAN_KEEP) if to_store else keep,
        tail_chunks=TAIL_CHUNKS,
        stop_past_keep=not to_store,
        check_utf8=to_store,
        # streamed bytes are checked as JSON on the way, whatever the size turns out to
        # be (held ones only when over the parse limit, below)
        check_json=to_store,
    )
    if to_store and scanned.content is None and scanned.size <= keep:
        scanned = collected(scanned, held_blocks(held), pages())
    return scanned


def _validation(
    scanned: Scanned, config: CompactionConfig, checks: dict[str, Any], *, to_store: bool
) -> validator.Validation:
    """The issues of the artifact: parsed up to GENERATION_PARSE_MAX_BYTES, past that
    checked (UTF-8, JSON as it streamed) but never parsed."""
    content = scanned.content
    if content is not None and scanned.size <= config.parse_limit:
        return validator.validate(content, **checks)
    utf8_error, json_error = scanned.utf8_error, scanned.json_error
    if not to_store and content is not None:
        utf8_error, json_error = check_held(content)
    return validator.validate_unparsed(scanned.size, utf8_error, json_error, **checks)


def _late_chunks(reading: Reading, pages: Pages, late_policy: str) -> LateChunks:
    """How a new stream meets a provisional artifact (``reading``: the two together;
    ``pages``: the new chunks, streamed again when they were too many to hold). The new
    chunks alone are checked as they stream, never parsed into a document."""
    alone = False  # not asked when together they are one document
    if not reading.validation.is_json:
        content = reading.scanned.content
        alone = blocks_are_json(
            (content[reading.held_size :],)
            if content is not None
            else (b"".join(page) for page in pages())
        )
    return LateChunks.after_provisional(
        together_json=reading.validation.is_json, alone_json=alone, late_policy=late_policy
    )
