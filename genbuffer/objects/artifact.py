"""An offloaded artifact: its object's name, its record in `metadata.offloaded`, and
the streamed upload and read-back that hash every byte on the way.

The object's name is derived from its content: ``org-<org>/gen-<gen>/<sha256>``
(``.zst`` when compressed), the sha256 of the artifact's own bytes. Writing the
same artifact twice gives the same object, so a compaction killed after its upload
and retried ends with one object; the generation in the name is what lets
``purge-objects`` lock the row an object belongs to before it deletes an orphan.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, cast

from genbuffer.errors import OperationFailed, StreamChanged
from genbuffer.objects.store import Store

__all__ = [
    "OBJECT_PATH",
    "ArtifactMismatch",
    "OffloadRecord",
    "object_path",
    "read_verified",
    "upload",
]

OBJECT_PATH = re.compile(r"^org-(\d+)/gen-(\d+)/([0-9a-f]{64})(\.zst)?$")
ZSTD_LEVEL = 3  # zstd's own default: about 4x on JSON text at several hundred MB/s
OUTPUT_BLOCK = 1024 * 1024  # decompressed bytes handed on at a time


class ArtifactMismatch(OperationFailed):
    """The artifact's bytes do not hash to the sha256 compaction recorded."""


@dataclass(frozen=True)
class OffloadRecord:
    """`metadata.offloaded` of a row whose `compacted` holds an object's URL."""

    url: str
    bytes: int
    sha256: str
    compression: str  # "none" or "zstd"
    content_type: str
    stored_bytes: int  # the object's size (compressed)

    def to_metadata(self) -> dict[str, Any]:
        """The JSON object stored in `metadata.offloaded`."""
        return {
            "url": self.url,
            "bytes": self.bytes,
            "sha256": self.sha256,
            "compression": self.compression,
            "content_type": self.content_type,
            "stored_bytes": self.stored_bytes,
        }

    @classmethod
    def of_row(cls, compacted: str | None, metadata: Any) -> OffloadRecord | None:
        """The record of a row whose `compacted` is the URL its metadata names; else None."""
        if not isinstance(metadata, dict) or not isinstance(metadata.get("offloaded"), dict):
            return None
        data = metadata["offloaded"]
        try:
            record = cls(
                url=str(data["url"]),
                bytes=int(data["bytes"]),
                sha256=str(data["sha256"]),
                compression=str(data.get("compression") or "none"),
                content_type=str(data.get("content_type") or "application/octet-stream"),
                stored_bytes=int(data.get("stored_bytes") or 0),
            )
        except (KeyError, TypeError, ValueError):
            return None
        return record if record.url == compacted else None


def object_path(organization_id: int, generation_id: int, sha256: str, compression: str) -> str:
    """The object's path below the store: the generation, then the content's sha256."""
    suffix = ".zst" if compression == "zstd" else ""
    return f"org-{organization_id}/gen-{generation_id}/{sha256}{suffix}"


def compressed(blocks: Iterable[bytes], compression: str) -> Iterator[bytes]:
    """``blocks`` compressed as one zstd frame (or as they are)."""
    if compression != "zstd":
        yield from blocks
        return
    import zstandard  # noqa: PLC0415

    packer = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compressobj()
    for block in blocks:
        if out := packer.compress(block):
            yield out
    yield packer.flush()


def decompressed(blocks: Iterable[bytes], compression: str) -> Iterator[bytes]:
    """The bytes of an object written by ``compressed``, at most OUTPUT_BLOCK at a time
    (a small frame may hold a gigabyte: its output must not come in one piece)."""
    if compression != "zstd":
        yield from blocks
        return
    import zstandard  # noqa: PLC0415

    source = cast("IO[bytes]", _BlocksReader(blocks))  # read(size) is all it calls
    reader = zstandard.ZstdDecompressor().stream_reader(source)
    while block := reader.read(OUTPUT_BLOCK):
        yield block


class _BlocksReader:
    """A read(size) view of an iterator of blocks, for zstandard's stream_reader."""

    def __init__(self, blocks: Iterable[bytes]) -> None:
        self._blocks = iter(blocks)
        self._block = memoryview(b"")

    def read(self, size: int = -1) -> bytes:
        while not self._block:
            block = next(self._blocks, None)
            if block is None:
                return b""
            self._block = memoryview(block)
        if size < 0:
            size = len(self._block)
        out, self._block = self._block[:size], self._block[size:]
        return bytes(out)


class _Counted:
    """Blocks passed through, hashed and counted before and after compression."""

    def __init__(self) -> None:
        self.hasher = hashlib.sha256()
        self.size = 0
        self.stored = 0

    def raw(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        for block in blocks:
            self.hasher.update(block)
            self.size += len(block)
            yield block

    def packed(self, blocks: Iterable[bytes]) -> Iterator[bytes]:
        for block in blocks:
            self.stored += len(block)
            yield block


def upload(
    store: Store,
    organization_id: int,
    generation_id: int,
    blocks: Iterable[bytes],
    *,
    sha256: str,
    size: int,
    compression: str,
    content_type: str,
) -> OffloadRecord:
    """Stream ``blocks`` into the object named after ``sha256``, hashing them on the way.

    The bytes were hashed once already (that is how the name is known); if they hash
    differently now, the object is deleted and the compaction is retried (StreamChanged).
    """
    path = object_path(organization_id, generation_id, sha256, compression)
    counted = _Counted()
    store.put(path, counted.packed(compressed(counted.raw(blocks), compression)), content_type)
    if counted.hasher.hexdigest() != sha256 or counted.size != size:
        store.delete([path])
        raise StreamChanged(
            f"generation {generation_id}: the bytes changed between reading and uploading "
            f"({counted.size} bytes, sha256 {counted.hasher.hexdigest()}; expected {size}, "
            f"{sha256}); the object was removed",
            hint="run the compaction again",
        )
    return OffloadRecord(
        url=store.url_of(path),
        bytes=size,
        sha256=sha256,
        compression=compression,
        content_type=content_type,
        stored_bytes=counted.stored,
    )


def read_verified(store: Store, path: str, record: OffloadRecord) -> Iterator[bytes]:
    """The artifact's bytes as they download; at the end, ArtifactMismatch when they do not
    hash to the recorded sha256 (the caller must not trust what it got before that)."""
    hasher = hashlib.sha256()
    size = 0
    for block in decompressed(store.read(path), record.compression):
        hasher.update(block)
        size += len(block)
        yield block
    digest = hasher.hexdigest()
    if digest != record.sha256 or size != record.bytes:
        raise ArtifactMismatch(
            f"{record.url}: the object's bytes hash to {digest} ({size} bytes), "
            f"but compaction recorded {record.sha256} ({record.bytes} bytes)",
            hint="the object was changed outside genbuf",
        )
