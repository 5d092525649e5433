"""When a buffer last changed, as far as anyone can tell: the one idle rule.

compact-pending, the worker's sweeper, status and metrics all judge an open
stream (one its producer never marked finished) by this module, so that what a
read-only command reports is what a compactor then decides. Three kinds of
evidence, each an upper bound on when the last chunk arrived:

* the producer's ``last_chunk_at``, where it keeps one;
* genbuf's own observation (``seen_end``, ``seen_at``, ``seen_first`` in the
  buffer's state hash, written by compactors only, observe.lua): how many chunks
  the buffer's life held (``trimmed`` + the list's length, which a trim does not
  change and every push raises) and when genbuf first saw that many;
* the list's ``OBJECT IDLETIME``, only where every genbuf connection reads with
  ``CLIENT NO-TOUCH`` (Redis 7.2+, Valkey). On Redis 7.0 any read resets the
  clock (a status every minute would keep a list "active" forever), and under an
  LFU policy the server refuses to say: there the clock is no evidence at all.

A buffer is quiet since the earliest of those bounds, but never before a change
that genbuf or the producer saw: a chunk the producer stamped, or a count genbuf
saw move. So a plain ``RPUSH`` list on Redis 7.0 is idle ``--idle`` after a
compactor first saw it at its final length; nothing a reader does moves that.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from genbuffer.redis.meta import Observation

__all__ = ["Observation", "quiet_for"]


def quiet_for(
    now: datetime,
    *,
    last_chunk_at: datetime | None,
    observation: Observation | None,
    end: int,
    idle_seconds: int | None,
) -> timedelta:
    """How long the buffer has certainly had no new chunk (zero when unknown).

    ``observation`` is the stored one (None: genbuf never looked), ``end`` what the
    buffer holds now (trimmed + length), ``idle_seconds`` the list's OBJECT IDLETIME
    where it can be trusted (None elsewhere). A reader passes what is stored; a
    compactor passes what it has just recorded: both get the same answer.
    """
    seen = (
        Observation(end, now, first=True)
        if observation is None
        else observation.looking_now(end, now)
    )
    bounds = [seen.at]  # the last chunk came no later than each of these
    changes = [] if seen.first else [seen.at]  # …and no earlier than each of these
    if last_chunk_at is not None:
        bounds.append(last_chunk_at)
        changes.append(last_chunk_at)
    if idle_seconds is not None:
        bounds.append(now - timedelta(seconds=idle_seconds))
    quiet_since = max(min(bounds), *changes) if changes else min(bounds)
    return max(timedelta(0), now - quiet_since)
