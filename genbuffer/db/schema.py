"""genbuffer's tables, as SQLAlchemy Core. `migrations/` mirrors them; a test checks it.

Core tables rather than ORM classes: genbuffer writes Core statements only, and the
ORM's import and mapper set-up would be a large part of a command's start-up.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.compiler import compiles

__all__ = [
    "genbuf_job_runs",
    "generation_artifact_history",
    "generation_chunks",
    "generation_compactions",
    "metadata",
    "metadata_validation_issues",
    "scenario_generations",
]

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only auto-increments an INTEGER PRIMARY KEY; everywhere else the ids are bigint.
Id = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL; a Python None is SQL NULL, not the JSON literal null.
Json = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")


# MySQL/MariaDB TEXT and BLOB stop at 64 KiB; artifacts and chunks can be far larger.
# Spelled LONGTEXT/LONGBLOB there by the compiler hooks below rather than as variants
# of the MySQL dialect's types: importing that dialect would slow every command.
class LongText(Text):
    """TEXT, or LONGTEXT on MySQL and MariaDB."""

    inherit_cache = True


class LongBytes(LargeBinary):
    """The binary type, or LONGBLOB on MySQL and MariaDB."""

    inherit_cache = True


@compiles(LongText, "mysql")
@compiles(LongText, "mariadb")
def _long_text(element: LongText, compiler: Any, **kw: Any) -> str:
    return "LONGTEXT"


@compiles(LongBytes, "mysql")
@compiles(LongBytes, "mariadb")
def _long_bytes(element: LongBytes, compiler: Any, **kw: Any) -> str:
    return "LONGBLOB"


metadata = MetaData(naming_convention=NAMING_CONVENTION)


def _created_at(*, index: bool = False) -> Column[object]:
    return Column("created_at", DateTime(timezone=True), server_default=func.now(), index=index)


# One validation with issues; audit rows outlive generations (no foreign key).
metadata_validation_issues = Table(
    "metadata_validation_issues",
    metadata,
    Column("id", Id, primary_key=True),
    Column("organization_id", BigInteger, nullable=True),
    Column("generation_id", BigInteger, nullable=False, index=True),
    Column("mode", String(16), nullable=False),
    Column("source", String(64), nullable=False),
    Column("errors", Json, nullable=False),
    _created_at(),
)

# A generation and, once compacted, its canonical artifact.
scenario_generations = Table(
    "scenario_generations",
    metadata,
    Column("id", Id, primary_key=True),
    Column("organization_id", BigInteger, nullable=False),
    Column("scenario_id", BigInteger, nullable=True),
    Column("llm_response", Json, nullable=True),
    Column("metadata", Json, nullable=False, server_default=text("'{}'")),
    Column("compacted", LongText, nullable=True),
    Column("chunk_count", Integer, nullable=True),
    Column("compacted_at", DateTime(timezone=True), nullable=True),
    Column("compacted_by", String(255), nullable=True),
    Column(
        "last_validation_issue_id",
        BigInteger,
        ForeignKey("metadata_validation_issues.id", ondelete="SET NULL"),
        nullable=True,
    ),
    _created_at(),
    Column("updated_at", DateTime(timezone=True), server_default=func.now()),
)

# Backup of one raw chunk, kept until the retention purge.
generation_chunks = Table(
    "generation_chunks",
    metadata,
    Column("id", Id, primary_key=True),
    Column("organization_id", BigInteger, nullable=False),
    Column("generation_id", BigInteger, nullable=False),
    Column("seq", Integer, nullable=False),
    Column("content", LongBytes, nullable=False),
    _created_at(index=True),
    UniqueConstraint("generation_id", "seq"),
)

# An artifact a new stream of its generation replaced (or extended): kept, never wiped.
# Written in the compaction's transaction, copied row-side from `scenario_generations`;
# the row's `metadata.history` lists the entries with their sha256. No foreign key:
# like audit rows, history outlives the generation row.
generation_artifact_history = Table(
    "generation_artifact_history",
    metadata,
    Column("id", Id, primary_key=True),
    Column("organization_id", BigInteger, nullable=False),
    Column("generation_id", BigInteger, nullable=False, index=True),
    Column("compacted", LongText, nullable=True),
    Column("llm_response", Json, nullable=True),
    Column("metadata", Json, nullable=True),
    Column("chunk_count", Integer, nullable=True),
    Column("compacted_at", DateTime(timezone=True), nullable=True),
    Column("compacted_by", String(255), nullable=True),
    Column("reason", String(32), nullable=False),
    _created_at(),
)

# One row per compaction outcome: what status, metrics and validation-report count.
# Appended (never updated), so counters read from it stay monotonic across the cron
# processes that write it; `result` is `persisted`, `strict_abort` or `failed`.
generation_compactions = Table(
    "generation_compactions",
    metadata,
    Column("id", Id, primary_key=True),
    Column("organization_id", BigInteger, nullable=False),
    Column("generation_id", BigInteger, nullable=False),
    Column("result", String(16), nullable=False),
    Column("mode", String(16), nullable=False),
    Column("chunk_count", Integer, nullable=True),
    Column("bytes", BigInteger, nullable=True),
    # seconds from the last chunk pushed to this compaction (null: the producer keeps
    # no last_chunk_at)
    Column("lag_seconds", Float, nullable=True),
    # error-severity validation issues: a soft compaction with any is one strict
    # mode would have aborted
    Column("errors", Integer, nullable=False, server_default=text("0")),
    Column("message", String(255), nullable=True),
    # a new stream met the artifact: `appended` or `replaced`, and by which rule
    # (`finished`, `json_continues`, `json_new_document`, `late_chunks_setting`)
    Column("late_chunks", String(16), nullable=True),
    Column("late_rule", String(32), nullable=True),
    _created_at(index=True),
)

# One row per run of a cron job (compact-pending, purge-chunks): doctor's and the
# metrics' last-success time.
genbuf_job_runs = Table(
    "genbuf_job_runs",
    metadata,
    Column("id", Id, primary_key=True),
    Column("job", String(64), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("started_at", DateTime(timezone=True), nullable=False),
    Column("finished_at", DateTime(timezone=True), nullable=False),
    Column("summary", Json, nullable=True),
    Index("ix_genbuf_job_runs_job_finished_at", "job", "finished_at"),
)
