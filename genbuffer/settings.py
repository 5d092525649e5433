"""The one Settings class: environment variables, or an env file such as a Laravel `.env`.

Nothing else in genbuffer reads the environment. Laravel's own variable names
are accepted as they are (``REDIS_HOST``, ``DB_CONNECTION``, …) so an app's
``.env`` can be pointed at with ``--env-file``; ``REDIS_URL`` and
``DATABASE_URL`` win over them when set.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from genbuffer.errors import UsageError

__all__ = ["MEMORY_REDIS_URL", "Settings", "load_settings", "mask_url"]

MEMORY_REDIS_URL = "memory://"
DEFAULT_SQLITE_URL = "sqlite:///storage/genbuffer.sqlite3"
_LARAVEL_NULLS = frozenset({"null", "(null)"})
_PG_SCHEMES = {"postgres", "postgresql", "pgsql", "postgresql+psycopg2"}


class Settings(BaseSettings):
    """Every setting genbuffer reads, by its environment name (case-insensitive)."""

    model_config = SettingsConfigDict(
        extra="ignore", case_sensitive=False, env_ignore_empty=True, frozen=True
    )

    redis_url: str | None = None
    redis_host: str | None = None
    redis_port: int = Field(default=6379, gt=0, lt=65536)
    redis_username: str | None = None
    redis_password: SecretStr | None = None
    redis_db: int = Field(default=0, ge=0)
    redis_prefix: str = ""

    database_url: SecretStr | None = None
    db_connection: str | None = None
    db_host: str = "127.0.0.1"
    db_port: int | None = Field(default=None, gt=0, lt=65536)
    db_database: str | None = None
    db_username: str | None = None
    db_password: SecretStr | None = None

    generation_chunk_ttl: int = Field(default=86400, gt=0)
    generation_chunk_max_len: int | None = Field(default=None, gt=0)
    generation_max_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    generation_json_schema: Path | None = None
    generation_chunks_backup: bool = True
    generation_chunks_retention_days: int = Field(default=7, gt=0)
    metadata_validation_strict: bool = False
    metadata_validation_log: Path = Path("storage/logs/metadata-validation.log")

    compaction_max_attempts: int = Field(default=5, gt=0)

    # Test hooks (genbuffer/faults.py): SIGKILL, or pause, at a compaction step.
    genbuffer_crash_at: str | None = None
    genbuffer_pause_at: str | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _laravel_null(cls, value: Any) -> Any:
        # Laravel's env() turns the literal strings "null" and "(null)" into null.
        if isinstance(value, str) and value.strip().lower() in _LARAVEL_NULLS:
            return None
        return value

    def effective_redis_url(self) -> str:
        """The Redis URL to connect to: REDIS_URL, else Laravel's REDIS_*, else in-process."""
        if self.redis_url:
            return self.redis_url
        if not self.redis_host:
            return MEMORY_REDIS_URL
        auth = ""
        if self.redis_password is not None:
            user = quote(self.redis_username or "", safe="")
            auth = f"{user}:{quote(self.redis_password.get_secret_value(), safe='')}@"
        return f"redis://{auth}{self.redis_host}:{self.redis_port}/{self.redis_db}"

    def effective_database_url(self) -> str:
        """The SQLAlchemy URL: DATABASE_URL, else Laravel's DB_*, else a local SQLite file."""
        if self.database_url is not None:
            return _normalise_database_url(self.database_url.get_secret_value())
        if not self.db_connection:
            return DEFAULT_SQLITE_URL
        connection = self.db_connection.lower()
        if connection == "sqlite":
            return f"sqlite:///{self.db_database or 'database/database.sqlite'}"
        drivers = {"pgsql": ("postgresql+psycopg", 5432), "mysql": ("mysql+pymysql", 3306)}
        drivers["mariadb"] = drivers["mysql"]
        if connection not in drivers:
            raise UsageError(
                f"DB_CONNECTION={self.db_connection!r} is not supported",
                hint="use pgsql, mysql, mariadb or sqlite, or set DATABASE_URL",
            )
        driver, default_port = drivers[connection]
        user = quote(self.db_username or "", safe="")
        password = ""
        if self.db_password is not None:
            password = ":" + quote(self.db_password.get_secret_value(), safe="")
        auth = f"{user}{password}@" if user or password else ""
        port = self.db_port or default_port
        database = quote(self.db_database or "", safe="")
        return f"{driver}://{auth}{self.db_host}:{port}/{database}"


def _normalise_database_url(url: str) -> str:
    """Point a plain postgres URL at psycopg 3, the driver genbuffer ships with."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _PG_SCHEMES:
        return f"postgresql+psycopg://{rest}"
    return url


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def load_settings(env_file: Path | None = None) -> Settings:
    """Load Settings from the environment and ``env_file``; bad values are a UsageError."""
    if env_file is not None and not env_file.is_file():
        raise UsageError(f"env file not found: {env_file}")
    try:
        return Settings(_env_file=env_file)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = str(first["loc"][0]).upper() if first["loc"] else "setting"
        raise UsageError(f"invalid setting {name}: {first['msg']}") from None
