"""Completion events: genbuf tells the app that a generation was compacted.

After every committed compaction (and every strict abort) genbuf adds one entry to a
Redis stream under the app's prefix, ``{prefix}app:scenario_planning:compaction-completed``
(``keys.completions_key``), capped at ``GENERATION_COMPLETION_EVENTS_MAX_LEN`` entries
(``MAXLEN ~``; 0 turns the events off). The app reads it with a consumer group of its own
(the Laravel package's ``genbuf:listen`` command), so that it need not poll
``compacted_at``.

Fields of an entry (all strings, as Redis stores them):

========================  =========================================================
``org``, ``gen``          the organization and generation ids
``scenario``              the scenario id, or ``""``
``outcome``               ``persisted`` (the row holds the artifact) or ``strict_abort``
``validation_id``         the ``metadata_validation_issues`` id, or ``""``
``chunk_count``           chunks the artifact holds (read, for a strict abort)
``bytes``                 the artifact's length in bytes
``sha256``                the artifact's sha256 (hex; for a strict abort the refused one)
``at``                    when genbuf announced it, ISO 8601 UTC
========================  =========================================================

Delivery is at least once, never before the commit: the entry is added after the
transaction commits and before the buffer is trimmed. A compactor killed in between
leaves the chunks in the buffer; the next run that finds the row already holding them
(compact-generation --delete, compact-pending or the worker) announces again, then
trims them. An entry can therefore come twice; a consumer treats
``(org, gen, sha256)`` as the identity. A failure to announce (Redis gone after the
commit) is logged and never undoes or fails the compaction.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from genbuffer import keys
from genbuffer.errors import GenbufferError
from genbuffer.redis.connection import RedisTarget, redis_errors

__all__ = ["DEFAULT_MAX_LENGTH", "OUTCOMES", "Completion", "Completions"]

log = logging.getLogger(__name__)

DEFAULT_MAX_LENGTH = 10_000  # GENERATION_COMPLETION_EVENTS_MAX_LEN's default
OUTCOMES = ("persisted", "strict_abort")


@dataclass(frozen=True)
class Completion:
    """One compaction's outcome, as the stream carries it."""

    organization_id: int
    generation_id: int
    scenario_id: int | None
    outcome: str  # one of OUTCOMES
    validation_id: int | None
    chunk_count: int
    bytes: int
    sha256: str | None

    def fields(self, at: str) -> dict[str, str]:
        """The stream entry's fields (documented in this module)."""
        return {
            "org": str(self.organization_id),
            "gen": str(self.generation_id),
            "scenario": "" if self.scenario_id is None else str(self.scenario_id),
            "outcome": self.outcome,
            "validation_id": "" if self.validation_id is None else str(self.validation_id),
            "chunk_count": str(self.chunk_count),
            "bytes": str(self.bytes),
            "sha256": self.sha256 or "",
            "at": at,
        }


class Completions:
    """The completion stream of one Redis database, under one key prefix."""

    def __init__(self, target: RedisTarget, *, max_length: int = DEFAULT_MAX_LENGTH) -> None:
        self.target = target
        self.max_length = max_length
        self.stream = keys.completions_key(target.prefix)

    def announce(self, completion: Completion) -> bool:
        """Add one entry; whether it was added. Never raises for Redis: a failure is
        logged (one line) and the caller's compaction stands. With ``max_length`` 0 the
        events are off and nothing is written."""
        command = self.command(completion)
        if command is None:
            return False
        try:
            client: Any = self.target.client
            with redis_errors(self.target.url):
                client.execute_command(*command)
        except (GenbufferError, redis.exceptions.RedisError) as error:
            self.not_announced(completion, error)
            return False
        return True

    def command(self, completion: Completion) -> tuple[str | int, ...] | None:
        """The XADD that announces ``completion`` (None: the events are off), for a caller
        that sends it beside another command (``CompactionProtocol.acknowledge_each_after``)."""
        if self.max_length <= 0:
            return None
        if completion.outcome not in OUTCOMES:
            raise ValueError(f"unknown outcome {completion.outcome!r}")
        at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        entry = [part for pair in completion.fields(at).items() for part in pair]
        return ("XADD", self.stream, "MAXLEN", "~", self.max_length, "*", *entry)

    def not_announced(self, completion: Completion, error: BaseException) -> None:
        """Log that ``completion`` was not announced (one line; the compaction stands)."""
        said = getattr(error, "message", None) or " ".join(str(error).split())
        log.warning(
            "generation %d: compacted (%s), but its completion event was not announced on %s: %s",
            completion.generation_id,
            completion.outcome,
            self.stream,
            said,
        )
