"""Alembic migrations of genbuffer, shipped in the package as genbuffer.migrations."""
