"""The object store's trust boundary: which objects genbuf reads, appends to and deletes.

Trusted: the operator's settings. ``GENERATION_OFFLOAD_URL`` is the store genbuf
writes to, reads from and purges; ``GENERATION_OFFLOAD_READ_URLS`` lists earlier
stores whose objects rows may still name (read, and continued into the current
store; never written to or purged there).

Not trusted: a row's `compacted` and `metadata.offloaded` (the app, or whoever gets an
SQL injection into it, writes them), Redis contents, and the names objects have. A
URL read from a row is followed only when, in its canonical form
(genbuffer.objects.location), it lies in one of those stores under exactly the name
genbuf gives that row's artifact: ``org-<org>/gen-<gen>/<sha256>[.zst]``, with the
row's organization and generation and the sha256 and compression its record says.
Anything else is an ObjectRefused (exit 4) before a byte is read; its message names
the URL the row holds and the settings to look at, never what is at that URL (no
size, digest or content: nothing was read to know them).

A refusal is not a failed attempt: it does not count toward quarantine, since it
says nothing about the buffer and the next run refuses it the same way until the
row or the settings change (a row written under an earlier store reads again as
soon as GENERATION_OFFLOAD_READ_URLS lists that store, with no ``--force``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from genbuffer.errors import ObjectRefused
from genbuffer.objects.artifact import OBJECT_PATH, object_path
from genbuffer.objects.location import Location, object_location, store_location

if TYPE_CHECKING:
    from genbuffer.objects.artifact import OffloadRecord
    from genbuffer.settings import Settings

__all__ = ["URL_SHOWN", "Admitted", "Boundary"]

URL_SHOWN = 200  # characters of a refused URL a message repeats (it is the row's own text)
_NOT_GENBUFS = (
    "genbuf names an artifact's object org-<org>/gen-<gen>/<sha256>[.zst] after its row and "
    "its content; this row was changed or copied outside genbuf"
)


@dataclass(frozen=True)
class Admitted:
    """An object a row may name: the configured store that holds it, and its name there."""

    root: Location
    key: str


@dataclass(frozen=True)
class Boundary:
    """The stores genbuf may touch: the current one and the earlier ones listed."""

    current: Location | None = None
    earlier: tuple[Location, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> Boundary:
        """GENERATION_OFFLOAD_URL and GENERATION_OFFLOAD_READ_URLS, canonical."""
        url = settings.generation_offload_url
        bucket = settings.aws_bucket
        current = store_location(url, bucket=bucket) if url is not None else None
        earlier = tuple(store_location(u, bucket=bucket) for u in settings.offload_read_urls())
        return cls(current=current, earlier=earlier)

    @property
    def roots(self) -> tuple[Location, ...]:
        """Every store an object may be read from, the current one first."""
        return (*((self.current,) if self.current is not None else ()), *self.earlier)

    def admit(self, record: OffloadRecord, organization_id: int, generation_id: int) -> Admitted:
        """Where the object ``record`` names is, if genbuf may read it for this row;
        else ObjectRefused (nothing is read, nothing disclosed)."""
        location = object_location(record.url)
        if location is None:
            raise self._refused(
                record.url, generation_id, "it is not an object URL genbuf writes", _NOT_GENBUFS
            )
        expected = object_path(organization_id, generation_id, record.sha256, record.compression)
        for root in self.roots:
            key = location.key_in(root)
            if key is None:
                continue
            if key != expected or not OBJECT_PATH.match(key):
                raise self._refused(
                    record.url,
                    generation_id,
                    f"it is not the name genbuf gives this row's artifact in {root.url}",
                    _NOT_GENBUFS,
                )
            return Admitted(root, key)
        raise self._refused(
            record.url,
            generation_id,
            "it is outside the object stores genbuf is configured for ("
            + (", ".join(root.url for root in self.roots) or "none")
            + ")",
            "genbuf reads objects only in GENERATION_OFFLOAD_URL and "
            "GENERATION_OFFLOAD_READ_URLS: if the row was written under an earlier store, "
            "add that store to GENERATION_OFFLOAD_READ_URLS (genbuf config show)",
        )

    @staticmethod
    def _refused(url: str, generation_id: int, why: str, hint: str) -> ObjectRefused:
        shown = url if len(url) <= URL_SHOWN else url[:URL_SHOWN] + "…"
        return ObjectRefused(
            f"generation {generation_id}: refused the object {shown!r} its row names: {why}; "
            "nothing was read",
            hint=hint,
        )
