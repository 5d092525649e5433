"""Create scenario_generations, metadata_validation_issues and generation_chunks.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def _timestamp(name: str) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=True)


def upgrade() -> None:
    """Create the three tables."""
    op.create_table(
        "metadata_validation_issues",
        sa.Column("id", Id, nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=True),
        sa.Column("generation_id", sa.BigInteger(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("errors", Json, nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_metadata_validation_issues")),
    )
    op.create_index(
        op.f("ix_metadata_validation_issues_generation_id"),
        "metadata_validation_issues",
        ["generation_id"],
    )
    op.create_table(
        "scenario_generations",
        sa.Column("id", Id, nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("scenario_id", sa.BigInteger(), nullable=True),
        sa.Column("llm_response", Json, nullable=True),
        sa.Column("metadata", Json, server_default=sa.text("'{}'"), nullable=False),
        sa.Column("compacted", sa.Text(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=True),
        sa.Column("compacted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("compacted_by", sa.String(length=255), nullable=True),
        sa.Column("last_validation_issue_id", sa.BigInteger(), nullable=True),
        _timestamp("created_at"),
        _timestamp("updated_at"),
        sa.ForeignKeyConstraint(
            ["last_validation_issue_id"],
            ["metadata_validation_issues.id"],
            name=op.f(
                "fk_scenario_generations_last_validation_issue_id_metadata_validation_issues"
            ),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_scenario_generations")),
    )
    op.create_table(
        "generation_chunks",
        sa.Column("id", Id, nullable=False),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("generation_id", sa.BigInteger(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("content", sa.LargeBinary(), nullable=False),
        _timestamp("created_at"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_chunks")),
        sa.UniqueConstraint(
            "generation_id", "seq", name=op.f("uq_generation_chunks_generation_id")
        ),
    )
    op.create_index(op.f("ix_generation_chunks_created_at"), "generation_chunks", ["created_at"])


def downgrade() -> None:
    """Drop the three tables."""
    op.drop_table("generation_chunks")
    op.drop_table("scenario_generations")
    op.drop_table("metadata_validation_issues")
