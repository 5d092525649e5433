"""db.rows: the statements sent on the driver's cursor behave as SQLAlchemy's would."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import exc as sa_exc

from genbuffer.db.rows import LOCK_ROW, prepared, sent_directly
from genbuffer.errors import DatabaseUnavailable
from tests.conftest import Stack
from tests.support.urls import POSTGRES_ADMIN_URL
from tests.support.wait import wait_until


def _gone(pid: int) -> bool | None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
        row = admin.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
    return True if row is None else None


def test_a_lost_connection_is_an_outage_and_the_next_transaction_a_fresh_connection(
    servers: Stack,
) -> None:
    """The backend dies before the row lock (a prepared statement): DatabaseUnavailable,
    not the driver's error; the dead connection is invalidated, not pooled again."""
    repository = servers.repository
    gen = repository.create_generation(5)
    with (
        pytest.raises(DatabaseUnavailable, match="unreachable"),
        repository.transaction() as tx,
    ):
        pid = int(tx.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        wait_until(lambda: _gone(pid), 20, "the backend to end")
        tx.lock_generation(gen)
    with repository.transaction() as tx:
        row = tx.lock_generation(gen)
        assert row is not None and row.id == gen
        assert int(tx.connection.exec_driver_sql("SELECT pg_backend_pid()").scalar_one()) != pid


def test_a_statement_error_is_sqlalchemys_and_keeps_the_connection(servers: Stack) -> None:
    """A value the server refuses: SQLAlchemy's DBAPIError around the driver's, the
    connection not invalidated; and the statement is listed as sent directly."""
    with servers.repository.engine.connect() as connection:
        statement = prepared(LOCK_ROW, connection)
        with pytest.raises(sa_exc.DBAPIError) as raised, connection.begin():
            statement.execute(connection, {"id": "not a number"})
        assert isinstance(raised.value.orig, psycopg.Error)
        assert not raised.value.connection_invalidated and not connection.invalidated
        assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1  # rolled back
    assert statement.sql in sent_directly()
