"""SQLAlchemy models of genbuffer's tables. `migrations/` mirrors them; a test checks it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    ForeignKey,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.mysql import LONGBLOB, LONGTEXT
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

__all__ = [
    "Base",
    "GenerationArtifactHistory",
    "GenerationChunk",
    "MetadataValidationIssue",
    "ScenarioGeneration",
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
LongText = Text().with_variant(LONGTEXT(), "mysql", "mariadb")
LongBytes = LargeBinary().with_variant(LONGBLOB(), "mysql", "mariadb")


class Base(DeclarativeBase):
    """Declarative base carrying the constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MetadataValidationIssue(Base):
    """One validation with issues; audit rows outlive generations (no foreign key)."""

    __tablename__ = "metadata_validation_issues"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    generation_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    mode: Mapped[str] = mapped_column(String(16), nullable=False)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    errors: Mapped[Any] = mapped_column(Json, nullable=False)
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class ScenarioGeneration(Base):
    """A generation and, once compacted, its canonical artifact."""

    __tablename__ = "scenario_generations"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    scenario_id: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    llm_response: Mapped[Any] = mapped_column(Json, nullable=True)
    metadata_: Mapped[Any] = mapped_column(
        "metadata", Json, nullable=False, server_default=text("'{}'")
    )
    compacted: Mapped[str | None] = mapped_column(LongText, nullable=True)
    chunk_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    compacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    compacted_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    last_validation_issue_id: Mapped[int | None] = mapped_column(
        BigInteger,
        ForeignKey("metadata_validation_issues.id", ondelete="SET NULL"),
        nullable=True,
    )
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
    updated_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )


class GenerationChunk(Base):
    """Backup of one raw chunk, kept until the retention purge."""

    __tablename__ = "generation_chunks"
    __table_args__ = (UniqueConstraint("generation_id", "seq"),)

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    generation_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    seq: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[bytes] = mapped_column(LongBytes, nullable=False)
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )


class GenerationArtifactHistory(Base):
    """An artifact a new stream of its generation replaced (or extended): kept, never wiped.

    Written in the compaction's transaction, copied row-side from `scenario_generations`;
    the row's `metadata.history` lists the entries with their sha256. No foreign key:
    like audit rows, history outlives the generation row.
    """

    __tablename__ = "generation_artifact_history"

    id: Mapped[int] = mapped_column(Id, primary_key=True)
    organization_id: Mapped[int] = mapped_column(BigInteger, nullable=False)
    generation_id: Mapped[int] = mapped_column(BigInteger, nullable=False, index=True)
    compacted: Mapped[str | None] = mapped_column(LongText, nullable=True)
    llm_response: Mapped[Any] = mapped_column(Json, nullable=True)
    metadata_: Mapped[Any] = mapped_column("metadata", Json, nullable=True)
    chunk_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    compacted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    compacted_by: Mapped[str | None] = mapped_column(String(255), nullable=True)
    reason: Mapped[str] = mapped_column(String(32), nullable=False)
    created_at: Mapped[datetime | None] = mapped_column(
        DateTime(timezone=True), server_default=func.now()
    )
