"""Add genbuf_job_leases: cron job exclusion that holds behind a transaction-mode pooler.

The session advisory locks (pg_try_advisory_lock, GET_LOCK) they replace stayed on
the server connection a pooler handed out, so every later run said it was already
running. A lease row is taken, renewed and released in short transactions.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-05
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEASES = "genbuf_job_leases"


def upgrade() -> None:
    """Create the lease table (a Laravel app has none)."""
    if sa.inspect(op.get_bind()).has_table(LEASES):
        return
    op.create_table(
        LEASES,
        sa.Column("job", sa.String(64), nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("job", name=op.f("pk_genbuf_job_leases")),
    )


def downgrade() -> None:
    """Drop the lease table."""
    op.drop_table(LEASES)
