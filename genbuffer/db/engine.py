"""Engines for the configured database, and the mapping of driver errors to genbuffer's."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from genbuffer.errors import DatabaseUnavailable, OperationFailed, SchemaMissing, UsageError
from genbuffer.settings import mask_url

__all__ = ["database_errors", "make_engine", "parse_database_url", "require_sqlite_file"]

_UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a missing table
_MYSQL_NO_SUCH_TABLE = 1146
_AUTH_SQLSTATES = {"28000", "28P01"}  # invalid authorization, invalid password
_INSUFFICIENT_PRIVILEGE = "42501"  # PostgreSQL: `permission denied for table …` (a REVOKE)
# what the servers say when a connection is refused for its credentials (psycopg gives
# no SQLSTATE for a failed connect, so the text is what there is)
_AUTH_MARKERS = ("password authentication failed", "role ", "access denied for user")


def parse_database_url(url: str) -> URL:
    """``url`` parsed; one that does not parse (a bad port, say) is a UsageError.

    So is one whose host holds an ``@``: SQLAlchemy ends the password at its first
    ``@``, so an unencoded one made the rest of the password the host (which the
    driver's error then printed). Neither error prints what it could not parse.
    """
    hint = (
        "check DATABASE_URL, or DB_HOST and DB_PORT in the app's .env; percent-encode "
        "@ : / # ? % in a password"
    )
    try:
        parsed = make_url(url)
    except sa_exc.ArgumentError as exc:
        raise UsageError(f"invalid DATABASE_URL {mask_url(url)}: {exc}", hint=hint) from None
    except ValueError:  # int() of the port: its text may be a piece of a password
        raise UsageError(
            f"invalid DATABASE_URL {mask_url(url)}: its port is not a number", hint=hint
        ) from None
    if "@" in (parsed.host or ""):
        raise UsageError(
            f"invalid DATABASE_URL {mask_url(url)}: an @ after the password's first one",
            hint=hint,
        )
    return parsed


def _json_loads(value: str | bytes) -> Any:
    """A JSON column's value, as json.loads reads it; JSON nested past Python's recursion
    limit (a row's metadata 5,000 brackets deep: jsonb stores it) is an error of that
    row in one line, not a RecursionError."""
    try:
        return json.loads(value)
    except RecursionError:
        raise OperationFailed(
            "a row of the database holds JSON nested too deeply to read "
            "(scenario_generations.metadata or llm_response)",
            hint="look at the row's JSON columns: something other than genbuf wrote them; "
            "genbuf leaves the row as it is",
        ) from None


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets a busy timeout and write-locking transactions."""
    parsed = parse_database_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            folder = Path(parsed.database).parent
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(
                    f"cannot create the folder of the SQLite database {folder}: {exc.strerror}",
                    hint="check DATABASE_URL (or DB_DATABASE)",
                ) from None
        engine = create_engine(parsed, connect_args={"timeout": 30}, json_deserializer=_json_loads)
        _sqlite_immediate_transactions(engine)
        return engine
    connect_args: dict[str, Any] = {}
    if parsed.get_backend_name() == "postgresql":
        connect_args["connect_timeout"] = 5
        # No server-side prepared statements (psycopg prepares a query on its 6th run):
        # behind a pooler in transaction mode (PgBouncer before 1.21, RDS Proxy,
        # Supavisor) the next transaction may run on a server connection without it,
        # or with another client's. genbuf's statements are few and cheap to plan: a
        # compact-pending batch measured the same with and without them.
        if parsed.get_driver_name() == "psycopg":
            connect_args["prepare_threshold"] = None
    try:
        # No pool_pre_ping: it costs a round trip per transaction (SELECT 1 at every
        # checkout: +37 us of CPU and +70 us on a local PostgreSQL, a network round trip
        # on a remote one, beside a worker's ~2.3 ms of CPU a compaction), and would
        # spare only the first use of a connection that died while pooled, not one in
        # use. Such a connection is invalidated on its first error anyway: an outage
        # (exit 3; a worker runs the compaction again after its pause).
        return create_engine(parsed, connect_args=connect_args, json_deserializer=_json_loads)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"the driver for {parsed.get_backend_name()} is not installed ({exc.name})",
            hint="install genbuffer's optional extra for this database",
        ) from None
    except sa_exc.NoSuchModuleError:
        raise UsageError(
            f"DATABASE_URL {mask_url(url)}: {parsed.drivername!r} is not a database genbuf knows",
            hint="use postgresql://, mysql+pymysql://, mariadb+pymysql:// or sqlite:///",
        ) from None


def require_sqlite_file(url: str) -> None:
    """Raise DatabaseUnavailable when ``url`` names a SQLite file that does not exist.

    For what only reads (doctor): connecting would create the file, empty, and
    make_engine its folder. Other backends and in-memory SQLite pass; a URL that
    does not parse is a UsageError.
    """
    parsed = parse_database_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    path = Path(database).absolute()
    if not path.exists():
        raise DatabaseUnavailable(
            f"the SQLite database {path} does not exist",
            hint="set DATABASE_URL (or point --env-file at the app's .env); "
            "`genbuf db upgrade` creates an embedded database",
        )


def _sqlite_immediate_transactions(engine: Engine) -> None:
    """Make every SQLite transaction take the write lock at BEGIN.

    Two compactors of one generation must not both read the row before either
    writes it; on SQLite that serialisation is BEGIN IMMEDIATE (the recipe in
    SQLAlchemy's pysqlite docs), where PostgreSQL uses SELECT … FOR UPDATE.
    """

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let SQLAlchemy emit BEGIN itself
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _missing_table(exc: sa_exc.DBAPIError) -> bool:
    """Whether the driver said a table does not exist (not a role, not a database)."""
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == _UNDEFINED_TABLE:
        return True
    args = getattr(orig, "args", ())
    if args and args[0] == _MYSQL_NO_SUCH_TABLE:
        return True
    return "no such table" in str(orig).lower()


@contextmanager
def database_errors(url: str) -> Iterator[None]:
    """Turn connection failures into DatabaseUnavailable and a missing schema into SchemaMissing."""
    try:
        yield
    except sa_exc.DBAPIError as exc:
        if _missing_table(exc):
            raise SchemaMissing(
                "the genbuffer tables are missing in the database",
                hint="run `genbuf db upgrade`",
            ) from None
        if getattr(exc.orig, "sqlstate", None) == _INSUFFICIENT_PRIVILEGE:
            reason = str(exc.orig).strip().splitlines()[0]
            raise DatabaseUnavailable(
                f"the database at {mask_url(url)} refuses genbuf's user: {reason}",
                hint="GRANT SELECT, INSERT, UPDATE, DELETE on genbuf's tables (and USAGE on "
                "their sequences) to DB_USERNAME; `genbuf db check` lists the tables",
            ) from None
        if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or (
            exc.connection_invalidated
        ):
            reason = str(exc.orig).strip().splitlines()[0] if exc.orig else type(exc).__name__
            credentials = getattr(exc.orig, "sqlstate", None) in _AUTH_SQLSTATES or any(
                marker in reason.lower() for marker in _AUTH_MARKERS
            )
            raise DatabaseUnavailable(
                f"the database is unreachable at {mask_url(url)}: {reason}",
                hint="check DB_USERNAME/DB_PASSWORD (or the user in DATABASE_URL)"
                if credentials
                else "check DATABASE_URL (or DB_HOST/DB_PORT/DB_DATABASE) and that it is up",
            ) from None
        raise
