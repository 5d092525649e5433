"""Which buffers to compact: a scan's verdict on every buffer under the prefix.

compact-pending compacts what this chooses; the worker's sweeper announces it. A buffer
is chosen when its stream is finished, when it has been idle for ``--idle``
(``genbuffer.engine.idleness``), or when its chunks expire within
GENERATION_EXPIRY_MARGIN (idle or not: compacted as a provisional artifact, which
chunks arriving later continue); quarantined, orphaned, empty and active buffers are
counted, not chosen. An orphaned buffer (set aside: no row) whose row exists by now (an
app that commits its row after the stream's end) is sorted again as any other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice

from genbuffer.engine.idleness import quiet_for
from genbuffer.redis import FoundBuffer, GenerationBuffer
from genbuffer.redis.meta import BufferMeta, Observation
from genbuffer.states import BufferState, Selected

__all__ = ["AT_RISK", "FINISHED", "IDLE", "Selection", "chosen_pages", "select_buffers"]

FINISHED = Selected.FINISHED
IDLE = Selected.IDLE
AT_RISK = Selected.AT_RISK

OBSERVE_PAGE = 500  # buffers whose looks are recorded per round trip

# the organization of each of these generations that has a row (Observations.organizations_of)
RowOwners = Callable[[list[int]], dict[int, int]]


@dataclass
class Selection:
    """The scan's verdict: what to compact, and what was skipped and why."""

    # (buffer, why: FINISHED, IDLE or AT_RISK)
    candidates: list[tuple[FoundBuffer, str]] = field(default_factory=list)
    buffers: int = 0
    quarantined: int = 0
    orphaned: int = 0
    active: int = 0
    empty: int = 0


def select_buffers(
    buffer: GenerationBuffer,
    idle: timedelta | None,
    now: datetime,
    *,
    dry_run: bool,
    expiry_margin: timedelta | None = None,
    owners: RowOwners | None = None,
) -> Selection:
    """Scan every buffer and sort it: finished, idle or about to expire (compact), or
    skipped and why. Idle is ``genbuffer.engine.idleness``'s rule; outside a dry run
    this records the look at each open buffer (the next run judges by it), a page of
    buffers per round trip. ``owners`` says which orphaned buffers have a row by now
    (None: none is asked)."""
    chosen = Selection()
    for _ in chosen_pages(
        buffer,
        idle,
        now,
        dry_run=dry_run,
        expiry_margin=expiry_margin,
        into=chosen,
        owners=owners,
    ):
        pass
    return chosen


def chosen_pages(
    buffer: GenerationBuffer,
    idle: timedelta | None,
    now: datetime,
    *,
    dry_run: bool,
    expiry_margin: timedelta | None,
    into: Selection,
    owners: RowOwners | None = None,
) -> Iterator[list[tuple[FoundBuffer, str]]]:
    """``select_buffers`` a page of buffers at a time: each page's candidates as soon as
    the page is sorted (compact-pending compacts them while the scan goes on); ``into``
    counts every buffer, once the pages are all read."""
    found_buffers = iter(buffer.scan.discover())
    while page := list(islice(found_buffers, OBSERVE_PAGE)):
        page = _with_rows_found(page, owners)
        open_lists = [f.key for f in page if f.state == BufferState.OPEN and f.has_list]
        looks = {} if idle is None or dry_run else buffer.scan.observe(open_lists, now)
        before = len(into.candidates)
        for found in page:
            _sort(into, found, looks.get(found.key), idle=idle, now=now, margin=expiry_margin)
        yield into.candidates[before:]


def _with_rows_found(page: list[FoundBuffer], owners: RowOwners | None) -> list[FoundBuffer]:
    """``page``, each orphaned buffer whose row exists by now seen without its mark (its
    compaction clears it): it was never compacted, and its chunks would expire."""
    orphans = [found for found in page if found.state == BufferState.ORPHANED]
    if not orphans or owners is None:
        return page
    rows = owners([found.generation_id for found in orphans])
    revived = {
        found.key for found in orphans if rows.get(found.generation_id) == found.organization_id
    }
    return [found.with_row() if found.key in revived else found for found in page]


def _sort(
    chosen: Selection,
    found: FoundBuffer,
    look: Observation | None,
    *,
    idle: timedelta | None,
    now: datetime,
    margin: timedelta | None,
) -> None:
    """Count one buffer, or add it to the candidates with why."""
    chosen.buffers += 1
    state = found.state
    if state == BufferState.QUARANTINED:
        chosen.quarantined += 1
    elif state == BufferState.ORPHANED:
        chosen.orphaned += 1
    elif not found.has_list and "chunk_count" not in found.meta:
        chosen.empty += 1  # a meta hash alone, with nothing ever counted in it
    elif state == BufferState.FINISHED:
        chosen.candidates.append((found, FINISHED))
    elif idle is not None and _quiet_for(found, look, now) >= idle:
        chosen.candidates.append((found, IDLE))
    elif (
        margin is not None
        and found.ttl_seconds is not None
        and found.ttl_seconds < margin.total_seconds()
    ):
        chosen.candidates.append((found, AT_RISK))
    else:
        chosen.active += 1


def _quiet_for(found: FoundBuffer, look: Observation | None, now: datetime) -> timedelta:
    """How long the buffer has certainly had no chunk (``genbuffer.engine.idleness``): by
    the look just recorded (what observe.lua saw, atomically), else by what is stored."""
    meta = BufferMeta(found.meta)
    return quiet_for(
        now,
        last_chunk_at=meta.last_chunk_at,
        observation=look or meta.observation,
        end=found.end if look is None else look.end,
        idle_seconds=found.list_idle_seconds,
    )
