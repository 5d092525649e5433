"""Relational side: the schema (mirrored by Alembic), the engine, and the repository."""
