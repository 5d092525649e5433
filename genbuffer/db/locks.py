"""Cross-process job locks, so that two cron runs of the same job never overlap.

PostgreSQL: a session advisory lock; MySQL/MariaDB: GET_LOCK; SQLite: flock on a
file beside the database. Each is released when its process dies, so a killed
cron run never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Engine, text

from genbuffer.db.engine import database_errors

__all__ = ["job_lock"]

_PG_TRY = text("SELECT pg_try_advisory_lock(:key)")
_PG_RELEASE = text("SELECT pg_advisory_unlock(:key)")
_MY_TRY = text("SELECT GET_LOCK(:name, 0)")
_MY_RELEASE = text("SELECT RELEASE_LOCK(:name)")


@contextmanager
def job_lock(engine: Engine, url: str, name: str) -> Iterator[bool]:
    """Hold the lock ``name`` for the block; yields False if another process holds it."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        with _file_lock(engine.url.database, name) as acquired:
            yield acquired
        return
    if dialect not in {"postgresql", "mysql", "mariadb"}:
        yield True
        return
    qualified = f"genbuf:{name}"
    key = int.from_bytes(hashlib.sha256(qualified.encode()).digest()[:8], "big", signed=True)
    postgres = dialect == "postgresql"
    with database_errors(url), engine.connect() as opened:
        # autocommit: the lock is held by the session, with no transaction left open
        connection = opened.execution_options(isolation_level="AUTOCOMMIT")
        if postgres:
            acquired = bool(connection.execute(_PG_TRY, {"key": key}).scalar_one())
        else:
            acquired = connection.execute(_MY_TRY, {"name": qualified}).scalar_one() == 1
        try:
            yield acquired
        finally:
            if acquired and postgres:
                connection.execute(_PG_RELEASE, {"key": key})
            elif acquired:
                connection.execute(_MY_RELEASE, {"name": qualified})


@contextmanager
def _file_lock(database: str | None, name: str) -> Iterator[bool]:
    """An exclusive, non-blocking flock beside a SQLite file (none for in-memory)."""
    if not database or database == ":memory:":
        yield True
        return
    path = Path(f"{database}.{name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock
