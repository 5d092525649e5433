"""Create (or adopt) scenario_generations, metadata_validation_issues and generation_chunks.

A Laravel app may have created some of these tables already (bigIncrements ids,
json or jsonb, timestamps without time zone, columns genbuf does not know).
This revision adopts them: it creates the tables that are missing and adds the
columns that are missing, and never drops, alters or rewrites what is there.
A column added to a table that already holds rows is nullable unless it has a
default; `genbuf db check` reports what still differs.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql, postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Json = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
LongText = sa.Text().with_variant(mysql.LONGTEXT(), "mysql", "mariadb")
LongBytes = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")
ISSUES_FK = "fk_scenario_generations_last_validation_issue_id_metadata_validation_issues"


def _timestamp(name: str) -> sa.Column[sa.DateTime]:
    return sa.Column(name, sa.DateTime(timezone=True), server_default=sa.func.now(), nullable=True)


def _tables() -> dict[str, tuple[list[sa.Column], list[sa.Constraint], list[list[str]]]]:
    """Per table: columns, table constraints, indexed column lists."""
    return {
        "metadata_validation_issues": (
            [
                sa.Column("id", Id, nullable=False),
                sa.Column("organization_id", sa.BigInteger(), nullable=True),
                sa.Column("generation_id", sa.BigInteger(), nullable=False),
                sa.Column("mode", sa.String(length=16), nullable=False),
                sa.Column("source", sa.String(length=64), nullable=False),
                sa.Column("errors", Json, nullable=False),
                _timestamp("created_at"),
            ],
            [sa.PrimaryKeyConstraint("id", name=op.f("pk_metadata_validation_issues"))],
            [["generation_id"]],
        ),
        "scenario_generations": (
            [
                sa.Column("id", Id, nullable=False),
                sa.Column("organization_id", sa.BigInteger(), nullable=False),
                sa.Column("scenario_id", sa.BigInteger(), nullable=True),
                sa.Column("llm_response", Json, nullable=True),
                sa.Column("metadata", Json, server_default=sa.text("'{}'"), nullable=False),
                sa.Column("compacted", LongText, nullable=True),
                sa.Column("chunk_count", sa.Integer(), nullable=True),
                sa.Column("compacted_at", sa.DateTime(timezone=True), nullable=True),
                sa.Column("compacted_by", sa.String(length=255), nullable=True),
                sa.Column("last_validation_issue_id", sa.BigInteger(), nullable=True),
                _timestamp("created_at"),
                _timestamp("updated_at"),
            ],
            [
                sa.ForeignKeyConstraint(
                    ["last_validation_issue_id"],
                    ["metadata_validation_issues.id"],
                    name=op.f(ISSUES_FK),
                    ondelete="SET NULL",
                ),
                sa.PrimaryKeyConstraint("id", name=op.f("pk_scenario_generations")),
            ],
            [],
        ),
        "generation_chunks": (
            [
                sa.Column("id", Id, nullable=False),
                sa.Column("organization_id", sa.BigInteger(), nullable=False),
                sa.Column("generation_id", sa.BigInteger(), nullable=False),
                sa.Column("seq", sa.Integer(), nullable=False),
                sa.Column("content", LongBytes, nullable=False),
                _timestamp("created_at"),
            ],
            [
                sa.PrimaryKeyConstraint("id", name=op.f("pk_generation_chunks")),
                sa.UniqueConstraint(
                    "generation_id", "seq", name=op.f("uq_generation_chunks_generation_id")
                ),
            ],
            [["created_at"]],
        ),
    }


def _index_name(table: str, columns: list[str]) -> str:
    return f"ix_{table}_{'_'.join(columns)}"


def upgrade() -> None:
    """Create each missing table; add each missing column and index to existing ones."""
    bind = op.get_bind()
    inspector = sa.inspect(bind)
    for table, (columns, constraints, indexes) in _tables().items():
        if not inspector.has_table(table):
            op.create_table(table, *columns, *constraints)
            for indexed in indexes:
                op.create_index(op.f(_index_name(table, indexed)), table, indexed)
            continue
        _adopt(inspector, table, columns, indexes)


def _adopt(
    inspector: sa.Inspector, table: str, columns: list[sa.Column], indexes: list[list[str]]
) -> None:
    """Add what an existing table lacks, leaving everything it has as it is."""
    present = {column["name"] for column in inspector.get_columns(table)}
    has_rows = (
        op.get_bind()
        .execute(sa.select(sa.literal(1)).select_from(sa.table(table)).limit(1))
        .first()
    )
    for column in columns:
        if column.name in present or column.name == "id":
            continue  # a table without `id` cannot be adopted: `genbuf db check` says so
        added = column._copy()
        if has_rows and not added.nullable and added.server_default is None:
            added.nullable = True  # no value to give the existing rows
        op.add_column(table, added)
    indexed = {tuple(index["column_names"]) for index in inspector.get_indexes(table)}
    for wanted in indexes:
        if tuple(wanted) not in indexed and set(wanted) <= present | {c.name for c in columns}:
            op.create_index(op.f(_index_name(table, wanted)), table, wanted)


def downgrade() -> None:
    """Drop the three tables (only for databases genbuf created)."""
    op.drop_table("generation_chunks")
    op.drop_table("scenario_generations")
    op.drop_table("metadata_validation_issues")
