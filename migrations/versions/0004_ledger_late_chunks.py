"""Record in the compaction ledger how a new stream met the artifact a row held.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LEDGER = "generation_compactions"


def upgrade() -> None:
    """Add late_chunks (appended or replaced) and late_rule (why) to the ledger."""
    with op.batch_alter_table(LEDGER) as batch:
        batch.add_column(sa.Column("late_chunks", sa.String(16), nullable=True))
        batch.add_column(sa.Column("late_rule", sa.String(32), nullable=True))


def downgrade() -> None:
    """Drop both columns."""
    with op.batch_alter_table(LEDGER) as batch:
        batch.drop_column("late_rule")
        batch.drop_column("late_chunks")
