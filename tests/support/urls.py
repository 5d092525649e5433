"""Where the test servers are (overridable by environment), and URLs built from them."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "IN_CI",
    "MARIADB_ADMIN_URL",
    "POSTGRES_ADMIN_URL",
    "REDIS_TEST_URL",
    "REPO_ROOT",
    "pg_url",
]

REDIS_TEST_URL = os.environ.get("REDIS_TEST_URL", "redis://127.0.0.1:6379/0")
POSTGRES_ADMIN_URL = os.environ.get(
    "POSTGRES_TEST_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
MARIADB_ADMIN_URL = os.environ.get("MARIADB_TEST_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
REPO_ROOT = Path(__file__).resolve().parent.parent.parent


def pg_url(database: str) -> str:
    """SQLAlchemy URL of a database on the test PostgreSQL server."""
    base = POSTGRES_ADMIN_URL.rsplit("/", 1)[0]
    return base.replace("postgresql://", "postgresql+psycopg://", 1) + f"/{database}"
