"""Moving legacy `metadata.compacted` blobs into the `compacted` column.

PostgreSQL moves them in SQL, an id range per short transaction: one UPDATE
judges and moves the good blobs, then what still holds a blob it could not move
is listed as a conflict. Other databases read rows in batches and the service
(``genbuffer.operations.migrate_compacted``) judges each in Python.

A blob moves when it is canonical base64 (the text is exactly the base64 of what
it decodes to; encode() wraps lines at 76 characters, hence the replace) and the
column is empty or equal. decode() raises on a symbol outside the alphabet, which
aborts the statement: the fast check lets it, and a range it aborts is judged
again with ``careful`` set, which runs decode() only on text a regex has shown to
be well-formed (CASE fixes the order of evaluation).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, func, select, text
from sqlalchemy import cast as sql_cast
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects.postgresql import JSONB

from genbuffer.db.engine import database_errors
from genbuffer.db.retention import relaxed_commit
from genbuffer.db.rows import GEN, ROW_COLUMNS, GenerationRow, to_row

__all__ = ["LegacyBlobs"]

_MOVE = text(r"""
    UPDATE scenario_generations
    SET compacted = metadata::jsonb ->> 'compacted',
        chunk_count = COALESCE(
            chunk_count,
            CASE WHEN jsonb_typeof(metadata::jsonb -> 'chunk_count') = 'number'
                 THEN (metadata::jsonb ->> 'chunk_count')::int END),
        compacted_at = COALESCE(
            compacted_at,
            CASE WHEN metadata::jsonb ->> 'compacted_at'
                      ~ '^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:?\d{2})?$'
                 THEN (metadata::jsonb ->> 'compacted_at')::timestamptz END),
        metadata = metadata::jsonb - 'compacted'
    WHERE id > :low AND id <= :high AND metadata::jsonb ? 'compacted'
      AND jsonb_typeof(metadata::jsonb -> 'compacted') = 'string'
      AND CASE WHEN NOT :careful
               THEN replace(encode(decode(metadata::jsonb ->> 'compacted', 'base64'),
                                   'base64'), E'\n', '') = metadata::jsonb ->> 'compacted'
               WHEN octet_length(metadata::jsonb ->> 'compacted') % 4 = 0
                    AND (metadata::jsonb ->> 'compacted') ~ '^[A-Za-z0-9+/]*={0,2}$'
               THEN replace(encode(decode(metadata::jsonb ->> 'compacted', 'base64'),
                                   'base64'), E'\n', '') = metadata::jsonb ->> 'compacted'
               ELSE false END
      AND (compacted IS NULL OR compacted = metadata::jsonb ->> 'compacted')
    RETURNING id
""")
# a dry run: the verdict (id, movable) on every blob in the range, judged as _MOVE does
_JUDGE = text(r"""
    SELECT id,
           jsonb_typeof(metadata::jsonb -> 'compacted') = 'string'
           AND CASE WHEN NOT :careful
                    THEN replace(encode(decode(metadata::jsonb ->> 'compacted', 'base64'),
                                        'base64'), E'\n', '') = metadata::jsonb ->> 'compacted'
                    WHEN octet_length(metadata::jsonb ->> 'compacted') % 4 = 0
                         AND (metadata::jsonb ->> 'compacted') ~ '^[A-Za-z0-9+/]*={0,2}$'
                    THEN replace(encode(decode(metadata::jsonb ->> 'compacted', 'base64'),
                                        'base64'), E'\n', '') = metadata::jsonb ->> 'compacted'
                    ELSE false END
           AND (compacted IS NULL OR compacted = metadata::jsonb ->> 'compacted')
    FROM scenario_generations
    WHERE id > :low AND id <= :high AND metadata::jsonb ? 'compacted'
""")
# what still holds a blob after the move, judged carefully (it never raises), so that
# a blob committed meanwhile, still movable, is not reported as a conflict
_CONFLICTS = text(r"""
    SELECT id FROM scenario_generations
    WHERE id > :low AND id <= :high AND metadata::jsonb ? 'compacted'
      AND NOT (
        jsonb_typeof(metadata::jsonb -> 'compacted') = 'string'
        AND CASE WHEN octet_length(metadata::jsonb ->> 'compacted') % 4 = 0
                      AND (metadata::jsonb ->> 'compacted') ~ '^[A-Za-z0-9+/]*={0,2}$'
                 THEN replace(encode(decode(metadata::jsonb ->> 'compacted', 'base64'),
                                     'base64'), E'\n', '') = metadata::jsonb ->> 'compacted'
                 ELSE false END
        AND (compacted IS NULL OR compacted = metadata::jsonb ->> 'compacted'))
    ORDER BY id
""")
_DECODE_REFUSED = "22023"  # invalid_parameter_value: decode() met a symbol outside base64


def _has_legacy_blob(connection: Connection) -> Any:
    """A portable predicate: metadata is an object with a `compacted` key."""
    if connection.dialect.name == "postgresql":
        # a Laravel table may have `json` rather than `jsonb`: the cast works for both
        return sql_cast(GEN.c.metadata, JSONB).op("?")("compacted")
    if connection.dialect.name == "sqlite":
        # json_type is NULL only for a missing key; json_extract is NULL for a JSON null too
        return func.json_type(GEN.c.metadata, "$.compacted").is_not(None)
    return func.json_extract(GEN.c.metadata, "$.compacted").is_not(None)


class LegacyBlobs:
    """Finding and moving rows whose metadata still holds a `compacted` blob."""

    def __init__(self, engine: Engine, url: str) -> None:
        self.engine = engine
        self.url = url

    @property
    def in_sql(self) -> bool:
        """Whether the move runs as set-based SQL (PostgreSQL)."""
        return self.engine.dialect.name == "postgresql"

    def count(self) -> int:
        """Rows whose metadata still holds a `compacted` blob."""
        with database_errors(self.url), self.engine.connect() as connection:
            query = select(func.count()).where(_has_legacy_blob(connection))
            return int(connection.execute(query).scalar_one())

    def batch(self, after_id: int, batch_size: int) -> list[GenerationRow]:
        """The next such rows by id, after ``after_id``."""
        with database_errors(self.url), self.engine.connect() as connection:
            rows = connection.execute(
                select(*ROW_COLUMNS)
                .where(GEN.c.id > after_id, _has_legacy_blob(connection))
                .order_by(GEN.c.id)
                .limit(batch_size)
            )
            return [to_row(row) for row in rows]

    def id_bounds(self) -> tuple[int, int] | None:
        """(lowest, highest) id of `scenario_generations`, or None when it is empty."""
        with database_errors(self.url), self.engine.connect() as connection:
            low, high = connection.execute(select(func.min(GEN.c.id), func.max(GEN.c.id))).one()
        return None if low is None else (int(low), int(high))

    def move_range(self, low: int, high: int, dry_run: bool) -> tuple[int, list[int]]:
        """Move the blobs of rows ``low < id <= high`` in SQL: (rows moved, conflict ids).

        Anything not movable is a conflict, reported and left alone. One short
        transaction; an id range, so each batch is one index range scan.
        """
        try:
            return self._move_range(low, high, dry_run, careful=False)
        except sa_exc.DBAPIError as exc:
            if getattr(exc.orig, "sqlstate", None) != _DECODE_REFUSED:
                raise
            # a malformed blob in this range: judge it again by regex, which never raises
            return self._move_range(low, high, dry_run, careful=True)

    def _move_range(
        self, low: int, high: int, dry_run: bool, *, careful: bool
    ) -> tuple[int, list[int]]:
        params = {"low": low, "high": high, "careful": careful}
        with database_errors(self.url), self.engine.begin() as connection:
            if dry_run:
                judged = connection.execute(_JUDGE, params).all()
                return sum(1 for _, ok in judged if ok), [row_id for row_id, ok in judged if not ok]
            relaxed_commit(connection)
            moved = len(connection.execute(_MOVE, params).all())
            bounds = {"low": low, "high": high}
            return moved, list(connection.execute(_CONFLICTS, bounds).scalars())
