"""config show: every setting's effective value and where it came from."""

from __future__ import annotations

import os
from pathlib import Path

from dotenv import dotenv_values
from pydantic import SecretStr

from genbuffer.documents import Document
from genbuffer.settings import Settings, load_settings, mask_url

__all__ = ["ConfigRow", "ConfigShow", "describe_settings"]

_SECRETS = {"redis_password", "db_password", "aws_secret_access_key", "aws_session_token"}
_URLS = {"redis_url", "database_url"}  # shown with the password masked


def describe_settings(env_file: Path | None = None) -> list[ConfigRow]:
    """Every setting's effective value and its source: environment, env file, default, derived."""
    settings = load_settings(env_file)
    from_file = (
        {k.lower(): v for k, v in dotenv_values(env_file).items()} if env_file is not None else {}
    )
    environment = {k.lower(): v for k, v in os.environ.items()}
    rows: list[ConfigRow] = []
    for name in Settings.model_fields:
        if name in environment and environment[name] != "":
            source = "environment"
        elif from_file.get(name) not in (None, ""):
            source = "env file"
        else:
            source = "default"
        value = getattr(settings, name)
        if value is not None and name in _SECRETS:
            shown: str | None = "***"
        elif value is not None and name in _URLS:
            raw = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
            shown = mask_url(raw)
        else:
            shown = None if value is None else str(value)
        rows.append(ConfigRow(name=name.upper(), value=shown, source=source))
    prefix_source = (
        "REDIS_PREFIX"
        if settings.redis_prefix is not None
        else f"REDIS_PREFIX_RULE={settings.redis_prefix_rule} on APP_NAME"
    )
    redis_url = mask_url(settings.effective_redis_url()) if settings.redis_configured() else None
    database_source = "derived" if settings.database_configured() else "embedded default"
    rows += [
        ConfigRow(
            name="redis url (effective)",
            value=redis_url,
            source="derived" if redis_url else "not set: required",
        ),
        ConfigRow(
            name="redis prefix (effective)",
            value=settings.effective_redis_prefix(),
            source=prefix_source,
        ),
        ConfigRow(
            name="database url (effective)",
            value=mask_url(settings.effective_database_url()),
            source=database_source,
        ),
        _offload_row(settings),
        _exclusion_row(settings),
    ]
    return rows


def _exclusion_row(settings: Settings) -> ConfigRow:
    """How cron jobs keep from overlapping on this database (pooler-safe leases)."""
    from datetime import timedelta  # noqa: PLC0415

    from genbuffer.db.leases import mechanism  # noqa: PLC0415

    # the URL's scheme names the backend (postgresql+psycopg, mysql+pymysql, sqlite)
    dialect = settings.effective_database_url().partition("://")[0].partition("+")[0]
    return ConfigRow(
        name="job exclusion (effective)",
        value=mechanism(dialect, timedelta(seconds=settings.job_lease_ttl)),
        source="JOB_LEASE_TTL",
    )


def _offload_row(settings: Settings) -> ConfigRow:
    """Whether and where large artifacts go, said plainly (a URL without a size does
    nothing, and says so)."""
    url, size = settings.generation_offload_url, settings.generation_offload_bytes
    if url is None:
        return ConfigRow(name="offload (effective)", value="off", source="GENERATION_OFFLOAD_URL")
    if size is None:
        return ConfigRow(
            name="offload (effective)",
            value=f"off: {url} is set, GENERATION_OFFLOAD_BYTES is not",
            source="set GENERATION_OFFLOAD_BYTES to offload",
        )
    compression = settings.generation_offload_compression
    return ConfigRow(
        name="offload (effective)",
        value=f"artifacts over {size} bytes to {url} (compression {compression})",
        source="GENERATION_OFFLOAD_*",
    )


class ConfigRow(Document):
    """One setting as `config show` prints it: value (secrets masked) and source."""

    name: str
    value: str | None
    source: str


class ConfigShow(Document):
    """What `config show --json` prints."""

    ok: bool = True

    settings: list[ConfigRow]
    redis: dict[str, object] | None = None  # a cluster's shape, when one is configured
