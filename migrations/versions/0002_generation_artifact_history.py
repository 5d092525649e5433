"""Add generation_artifact_history: artifacts a regenerated stream replaced, kept.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
TABLE = "generation_artifact_history"


def upgrade() -> None:
    """Create the history table (a Laravel app never has it)."""
    if sa.inspect(op.get_bind()).has_table(TABLE):
        return
    op.create_table(
        TABLE,
        sa.Column("id", Id, primary_key=True),
        sa.Column("organization_id", sa.BigInteger(), nullable=False),
        sa.Column("generation_id", sa.BigInteger(), nullable=False),
        sa.Column("compacted", LongText, nullable=True),
        sa.Column("llm_response", Json, nullable=True),
        sa.Column("metadata", Json, nullable=True),
        sa.Column("chunk_count", sa.Integer(), nullable=True),
        sa.Column("compacted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("compacted_by", sa.String(255), nullable=True),
        sa.Column("reason", sa.String(32), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=True
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_artifact_history")),
    )
    op.create_index(op.f("ix_generation_artifact_history_generation_id"), TABLE, ["generation_id"])


def downgrade() -> None:
    """Drop the history table."""
    op.drop_index(op.f("ix_generation_artifact_history_generation_id"), table_name=TABLE)
    op.drop_table(TABLE)
