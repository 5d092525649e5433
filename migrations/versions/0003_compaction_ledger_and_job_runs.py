"""Add generation_compactions (one row per compaction outcome) and genbuf_job_runs.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
LEDGER = "generation_compactions"
RUNS = "genbuf_job_runs"


def upgrade() -> None:
    """Create the compaction ledger and the job-run table (a Laravel app has neither)."""
    existing = sa.inspect(op.get_bind())
    if not existing.has_table(LEDGER):
        op.create_table(
            LEDGER,
            sa.Column("id", Id, primary_key=True),
            sa.Column("organization_id", sa.BigInteger(), nullable=False),
            sa.Column("generation_id", sa.BigInteger(), nullable=False),
            sa.Column("result", sa.String(16), nullable=False),
            sa.Column("mode", sa.String(16), nullable=False),
            sa.Column("chunk_count", sa.Integer(), nullable=True),
            sa.Column("bytes", sa.BigInteger(), nullable=True),
            sa.Column("lag_seconds", sa.Float(), nullable=True),
            sa.Column("errors", sa.Integer(), server_default=sa.text("0"), nullable=False),
            sa.Column("message", sa.String(255), nullable=True),
            sa.Column(
                "created_at",
                sa.DateTime(timezone=True),
                server_default=sa.func.now(),
                nullable=True,
            ),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_compactions")),
        )
        op.create_index(op.f("ix_generation_compactions_created_at"), LEDGER, ["created_at"])
    if not existing.has_table(RUNS):
        op.create_table(
            RUNS,
            sa.Column("id", Id, primary_key=True),
            sa.Column("job", sa.String(64), nullable=False),
            sa.Column("ok", sa.Boolean(), nullable=False),
            sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
            sa.Column("summary", Json, nullable=True),
            sa.PrimaryKeyConstraint("id", name=op.f("pk_genbuf_job_runs")),
        )
        op.create_index("ix_genbuf_job_runs_job_finished_at", RUNS, ["job", "finished_at"])


def downgrade() -> None:
    """Drop both tables."""
    op.drop_index("ix_genbuf_job_runs_job_finished_at", table_name=RUNS)
    op.drop_table(RUNS)
    op.drop_index(op.f("ix_generation_compactions_created_at"), table_name=LEDGER)
    op.drop_table(LEDGER)
