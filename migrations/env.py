"""Alembic environment: a connection handed in by `genbuf db upgrade`, else one from Settings.

Run as `alembic upgrade head` at the repository root, the settings come from the
environment and the env file genbuf would read: `-x env-file=PATH`, else
GENBUF_ENV_FILE (a Laravel .env works as it is).
"""

from __future__ import annotations

from logging.config import fileConfig
from pathlib import Path

from alembic import context
from sqlalchemy import Connection

from genbuffer.db.engine import make_engine
from genbuffer.db.schema import metadata
from genbuffer.settings import Settings, env_file_from_environment, load_settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def _settings() -> Settings:
    """Settings from `-x env-file=PATH`, else GENBUF_ENV_FILE, and the environment."""
    given = context.get_x_argument(as_dictionary=True).get("env-file")
    return load_settings(Path(given) if given else env_file_from_environment())


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    """Emit SQL for the configured database without connecting."""
    context.configure(
        url=_settings().effective_database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Run on the shared connection if one was given, else on the configured database."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_settings().effective_database_url())
    with engine.connect() as connection:
        _run(connection)
        connection.commit()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
