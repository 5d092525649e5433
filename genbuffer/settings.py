"""The one Settings class: environment variables, or an env file such as a Laravel `.env`.

Nothing else in genbuffer reads the environment. Laravel's own variable names
are accepted as they are (``REDIS_HOST``, ``DB_CONNECTION``, …) so an app's
``.env`` can be pointed at with ``--env-file``; ``REDIS_URL`` and
``DATABASE_URL`` win over them when set.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticUseDefault
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from genbuffer.errors import UsageError
from genbuffer.objects.location import store_location

__all__ = [
    "MEMORY_REDIS_URL",
    "Settings",
    "env_file_from_environment",
    "laravel_slug",
    "load_settings",
    "mask_url",
    "seed_list",
]

MEMORY_REDIS_URL = "memory://"
DEFAULT_SQLITE_URL = "sqlite:///storage/genbuffer.sqlite3"
_LARAVEL_NULLS = frozenset({"null", "(null)"})
_PG_SCHEMES = {"postgres", "postgresql", "pgsql", "postgresql+psycopg2"}


class Settings(BaseSettings):
    """Every setting genbuffer reads, by its environment name (case-insensitive)."""

    model_config = SettingsConfigDict(extra="ignore", case_sensitive=False, frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """pydantic-settings' sources in its order; without an env file (no --env-file,
        no GENBUF_ENV_FILE) no env-file source at all, rather than one that reads nothing
        and still looks up every field."""
        if isinstance(dotenv_settings, DotEnvSettingsSource) and dotenv_settings.env_file is None:
            return init_settings, env_settings, file_secret_settings
        return init_settings, env_settings, dotenv_settings, file_secret_settings

    # Each field's description is its entry in docs/settings.md (scripts/gen_docs.py).
    redis_url: str | None = Field(
        default=None,
        description="Redis URL; wins over the `REDIS_*` below. `memory://` is an in-process "
        "Redis (fakeredis, the extra `pip install 'genbuffer[embedded]'`) that lives as long "
        "as the process: for demos and tests, never a fallback",
    )
    redis_host: str | None = Field(
        default=None,
        description="Laravel's Redis host, used when `REDIS_URL` is unset. With neither, a "
        "command that needs Redis stops (exit 2) with a hint: the in-process `memory://` is "
        "used only when asked for",
    )
    redis_port: int = Field(
        default=6379, gt=0, lt=65536, description="Laravel's Redis port (with `REDIS_HOST`)"
    )
    redis_username: str | None = Field(
        default=None,
        description="Laravel's Redis user (with `REDIS_HOST`, and on a cluster's nodes)",
    )
    redis_password: SecretStr | None = Field(
        default=None,
        description="Laravel's Redis password (with `REDIS_HOST`, and on a cluster's nodes); "
        "never printed",
    )
    redis_db: int = Field(
        default=0,
        ge=0,
        description="Laravel's Redis database number (with `REDIS_HOST`); one beyond the "
        "server's databases is one line naming `REDIS_DB` (exit 2)",
    )
    # seconds before a silent Redis counts as unreachable (exit 3), per attempt
    redis_socket_timeout: float = Field(
        default=5.0,
        gt=0,
        le=3600,
        description="seconds to connect or to get a reply before Redis counts as unreachable "
        "(exit 3); redis-py retries twice",
    )
    redis_prefix: str | None = Field(  # None: not set (an empty value is an explicit "")
        default=None,
        description="prepended to every key exactly once (Laravel's prefix: see "
        "[the key prefix](operations.md#the-key-prefix)); set but empty means no prefix",
    )
    redis_prefix_rule: Literal["none", "underscore", "hyphen"] = Field(
        default="none",
        description='with `REDIS_PREFIX` unset: `underscore` derives `slug(APP_NAME, "_")` + '
        "`_database_` (older Laravel skeletons), `hyphen` derives `slug(APP_NAME)` + "
        "`-database-` (Laravel 11+); `none` uses no prefix. The slug is Laravel's "
        "`Str::slug`, transliteration included (`Straße & Söhne` → `strasse_sohne_database_`)",
    )
    app_name: str | None = Field(
        default=None,
        description="Laravel's app name, from which `REDIS_PREFIX_RULE` derives the prefix; "
        "set while `REDIS_PREFIX` is unset and the rule is `none`, it is warned about",
    )
    # Seed nodes of a Redis Cluster (host:port, comma-separated): wins over REDIS_URL
    redis_cluster_nodes: str | None = Field(
        default=None,
        description="seed nodes of a Redis Cluster (or Valkey cluster, or a managed one's "
        "configuration endpoint), `host:port[,host:port…]`; wins over "
        "`REDIS_URL`/`REDIS_HOST`. `REDIS_USERNAME`/`REDIS_PASSWORD`, the prefix and the TTL "
        "apply. See [Redis Cluster](design.md#redis-cluster)",
    )
    redis_scheme: Literal["tcp", "tls"] = Field(  # Laravel's name: TLS to the host or nodes
        default="tcp",
        description="`tls`: TLS to `REDIS_HOST` (as `tls://host` does) and to the cluster's "
        "nodes; a `rediss://` `REDIS_URL` says the same",
    )
    # The hash-tagged key template for genbuf's own pushes (keys of both are always read)
    generation_key_tags: bool = Field(
        default=False,
        description="genbuf's own pushes write the hash-tagged key template, "
        "`{prefix}{app:…:chunks}` and its `:meta`, so that list and meta hash share a "
        "cluster slot (sequenced pushes need it on a cluster). Keys of both templates are "
        "always read",
    )

    database_url: SecretStr | None = Field(
        default=None,
        description="SQLAlchemy URL; wins over `DB_*`. `postgres://` and `postgresql://` use "
        "psycopg 3",
    )
    db_connection: str | None = Field(
        default=None,
        description="Laravel's database driver: `pgsql`, `sqlite`, `mysql`, `mariadb` (the "
        "last two need the extra: `pip install 'genbuffer[mysql]'`, PyMySQL). With neither it "
        "nor `DATABASE_URL`, the embedded `sqlite:///storage/genbuffer.sqlite3`, announced on "
        "stderr (and in `warnings` under `--json`) by every command that uses it",
    )
    db_host: str = Field(default="127.0.0.1", description="Laravel's database host")
    db_port: int | None = Field(
        default=None,
        gt=0,
        lt=65536,
        description="Laravel's database port; unset: the driver's (5432 for `pgsql`, 3306 "
        "for `mysql` and `mariadb`)",
    )
    db_database: str | None = Field(
        default=None,
        description="Laravel's database name (with `DB_CONNECTION=sqlite`, the file: "
        "`database/database.sqlite` when unset; a relative path is taken from the env "
        "file's folder, the app's base path, as artisan does)",
    )
    db_username: str | None = Field(default=None, description="Laravel's database user")
    db_password: SecretStr | None = Field(
        default=None, description="Laravel's database password; never printed"
    )

    # Redis refuses an EXPIRE whose deadline overflows; 2**32 s (136 years) is far inside.
    generation_chunk_ttl: int = Field(
        default=86400,
        gt=0,
        le=2**32,
        description="seconds (1 to 2³², what Redis accepts; checked before any I/O); set on "
        "the list and the meta hash when a push creates them",
    )
    generation_chunk_max_len: int | None = Field(
        default=None,
        gt=0,
        description="a push that leaves the list longer than this logs a warning; `status` "
        "counts such lists (`over_max_len`), `metrics` exports them "
        "(`genbuf_buffers_over_max_len`) and counts compactions of more chunks "
        "(`genbuf_compactions_over_max_len_total`)",
    )
    generation_max_bytes: int = Field(
        default=256 * 1024 * 1024,
        gt=0,
        description="a generation over this is an `oversize` issue and is not persisted (read "
        "stops there: no out-of-memory)",
    )
    # Artifacts up to this size are parsed (llm_response, duplicate keys, the schema);
    # larger ones, in the row or offloaded, are checked as JSON as they stream and keep
    # llm_response null: parsing holds several times the artifact's size in memory.
    generation_parse_max_bytes: int = Field(
        default=8 * 1024 * 1024,
        gt=0,
        description="artifacts up to this size are parsed: `llm_response`, duplicate keys, "
        "the JSON Schema. Larger ones, in the row or offloaded alike, are checked as JSON as "
        "they stream (strict aborts on `invalid_json`, soft records it with the byte where "
        "the parser stopped) and `llm_response` stays null: parsing holds several times the "
        "artifact in memory",
    )
    generation_json_schema: Path | None = Field(
        default=None,
        description="path of a JSON Schema that `llm_response` must satisfy "
        "(`schema_violation` issues, with JSON paths); read and checked (a valid schema whose "
        "every `$ref` resolves) when a command that compacts starts: a bad one is a usage "
        "error (exit 2), never a failed compaction",
    )
    generation_chunks_backup: bool = Field(
        default=True,
        description="keep each compacted chunk in `generation_chunks` until the retention purge",
    )
    generation_completion_events_max_len: int = Field(
        default=10_000,
        ge=0,
        description="entries kept (approximately, `MAXLEN ~`) on the completion stream "
        "`{REDIS_PREFIX}app:scenario_planning:compaction-completed`, where genbuf announces "
        "every committed compaction and strict abort for the app; 0 announces nothing",
    )
    generation_chunks_retention_days: int = Field(
        default=7, gt=0, le=36500, description="default age for `purge-chunks`"
    )
    metadata_validation_strict: bool = Field(
        default=False, description="strict mode: validation errors abort the persist"
    )
    metadata_validation_log: Path = Field(
        default=Path("storage/logs/metadata-validation.log"),
        description="the JSONL audit log (a symlink there is refused). A relative path is taken "
        "from the env file's folder when one is given (--env-file, GENBUF_ENV_FILE; a Laravel "
        "app's storage/logs beside its .env), else from the working directory",
    )

    compaction_max_attempts: int = Field(
        default=5,
        gt=0,
        description="failed compactions (aborts, unexpected errors; not outages) before a "
        "generation is quarantined",
    )
    # Seconds a cron job's lease lasts unrenewed (renewed every third of it): how long
    # the next run waits after a holder is killed (kill -9) before taking it over.
    job_lease_ttl: int = Field(
        default=60,
        ge=3,
        le=86400,
        description="seconds a cron job's lease lasts unrenewed (3 to 86400; renewed every "
        "third of it): the longest the next run waits after a run was killed (kill -9) or "
        "lost the database. See "
        "[Behind a connection pooler](operations.md#behind-a-connection-pooler)",
    )
    # A new stream of a generation whose artifact came from a closed stream: replace
    # the artifact (kept in generation_artifact_history), or append to it.
    generation_regeneration: Literal["replace", "append"] = Field(
        default="replace",
        description="a new stream of a generation whose artifact is whole (its stream was "
        "marked finished: `finished_at`, `genbuf push --finish`): `replace` the artifact, or "
        "`append` to it. Either way the artifact it met is kept in "
        "`generation_artifact_history` and listed in `metadata.history`",
    )
    # Chunks arriving after an artifact was compacted from a stream never marked
    # finished (idle, about to expire) continue it when the two parse as one JSON
    # document, replace it when only the new chunks parse; otherwise this decides.
    generation_late_chunks: Literal["append", "replace"] = Field(
        default="append",
        description="chunks arriving after an artifact was compacted from a stream never "
        "marked finished (idle, about to expire, or by hand): they continue it when the two "
        "parse as one JSON document, replace it when only the new chunks parse; otherwise "
        "`append` or `replace` as set here. See "
        "[Regenerated streams](design.md#regenerated-streams)",
    )
    # compact-pending and the worker's sweeper compact a buffer whose chunks expire
    # within this many seconds, idle or not (three periods of the 5-minute cron line
    # of docs/operations.md: two runs may fail and the third still saves it)
    generation_expiry_margin: int = Field(
        default=900,
        gt=0,
        le=2**32,
        description="seconds: `compact-pending` and the worker's sweeper compact a buffer "
        "whose chunks expire within this, idle or not (a provisional artifact that later "
        "chunks continue); `status` counts it `at_risk` until then. 15 minutes is three "
        "periods of the 5-minute [cron line](operations.md#cron): keep it above twice your "
        "cron period",
    )

    # Large artifacts go to an object store (s3://bucket/prefix, file:///path, memory://)
    # and `compacted` holds the object's URL; unset: every artifact stays in the row.
    generation_offload_url: str | None = Field(
        default=None,
        description="object store for large artifacts: `s3://bucket/prefix`, "
        "`file:///path` (created on first use), or `memory://` (in-process tests only: "
        "refused unless `REDIS_URL=memory://` too). See "
        "[Large artifacts in an object store](design.md#large-artifacts-in-an-object-store)",
    )
    generation_offload_bytes: int | None = Field(  # unset: never offload
        default=None,
        gt=0,
        description="artifacts larger than this go to the store and `compacted` holds the "
        "object's URL; unset: never (a URL without it offloads nothing, and `config show` "
        "says so)",
    )
    generation_offload_compression: Literal["none", "zstd"] = Field(
        default="none",
        description="`zstd`: objects are one zstd frame (`.zst`), compressed and "
        "decompressed as they stream",
    )
    # Earlier stores whose objects rows may still name (comma-separated URLs): read, and
    # continued into GENERATION_OFFLOAD_URL; never written to or purged. genbuf touches
    # no object outside these and GENERATION_OFFLOAD_URL (genbuffer.objects.boundary).
    generation_offload_read_urls: str | None = Field(
        default=None,
        description="earlier stores whose objects rows may still name, comma-separated "
        "(`s3://old-bucket/generations, file:///srv/objs`): read, and continued into "
        "`GENERATION_OFFLOAD_URL` when new chunks arrive; never written to or purged. genbuf "
        "reads no object outside these and `GENERATION_OFFLOAD_URL` (exit 4, see "
        "[Threat model](design.md#threat-model)). Checked when settings load, like "
        "`GENERATION_OFFLOAD_URL` (a malformed URL, a bucket with a space, `..`: exit 2)",
    )
    # file:// stores: objects 0600 in 0700 directories; a group (the one the app's PHP
    # runs as) makes them 0640 in 0750 directories of that group.
    generation_offload_file_group: str | None = Field(
        default=None,
        description="`file://` stores: unset, objects are written `0600` in `0700` "
        "directories (owner only); a group name or id (the one the app's PHP runs as, e.g. "
        "`www-data`) makes them `0640` in `0750` directories of that group. The user genbuf "
        "runs as must belong to it; an unknown group is exit 2",
    )
    # S3 by the usual AWS names; Laravel's AWS_BUCKET / AWS_ENDPOINT /
    # AWS_USE_PATH_STYLE_ENDPOINT are read as they are.
    aws_access_key_id: str | None = Field(
        default=None,
        description="S3 credentials (without them: the instance's role, as the AWS SDKs do)",
    )
    aws_secret_access_key: SecretStr | None = Field(
        default=None, description="S3 credentials, with `AWS_ACCESS_KEY_ID`"
    )
    aws_session_token: SecretStr | None = Field(
        default=None, description="S3 credentials: a session's token"
    )
    aws_default_region: str | None = Field(default=None, description="the bucket's region")
    aws_region: str | None = Field(
        default=None, description="the bucket's region, when `AWS_DEFAULT_REGION` is unset"
    )
    aws_endpoint_url: str | None = Field(
        default=None,
        description="an S3-compatible store's endpoint (MinIO, R2, moto…), when "
        "`AWS_ENDPOINT_URL_S3` is unset. An `http://` endpoint is allowed",
    )
    aws_endpoint_url_s3: str | None = Field(
        default=None,
        description="an S3-compatible store's endpoint; of `AWS_ENDPOINT_URL_S3`, "
        "`AWS_ENDPOINT_URL`, `AWS_ENDPOINT` the first one set wins",
    )
    aws_endpoint: str | None = Field(
        default=None,
        description="Laravel's name for the endpoint, read as it is (after "
        "`AWS_ENDPOINT_URL_S3` and `AWS_ENDPOINT_URL`)",
    )
    aws_bucket: str | None = Field(
        default=None,
        description="Laravel's bucket, used when `GENERATION_OFFLOAD_URL` names none "
        "(`s3:///prefix`)",
    )
    aws_use_path_style_endpoint: bool | None = Field(
        default=None,
        description="Laravel's name: `true` path-style requests (MinIO), `false` virtual-hosted",
    )

    @field_validator("*", mode="before")
    @classmethod
    def _laravel_values(cls, value: Any, info: ValidationInfo) -> Any:
        # Laravel's env() turns "null" and "(null)" into null, and "(empty)" into "".
        if isinstance(value, str):
            if value.strip().lower() in _LARAVEL_NULLS:
                return None
            if value.strip().lower() == "(empty)":
                value = ""
            if value == "" and info.field_name != "redis_prefix":
                raise PydanticUseDefault  # an empty variable means: not set
        return value

    @field_validator("generation_offload_url")
    @classmethod
    def _offload_url(cls, value: str | None) -> str | None:
        # checked here, not when the store opens: a bucket with a space panics obstore
        if value is not None:
            store_location(value)
        return value

    @field_validator("generation_offload_read_urls")
    @classmethod
    def _offload_read_urls(cls, value: str | None) -> str | None:
        for url in _url_list(value):
            store_location(url)
        return value

    @field_validator("generation_offload_file_group")
    @classmethod
    def _offload_file_group(cls, value: str | None) -> str | None:
        if value is not None:
            group_id(value)
        return value

    def offload_read_urls(self) -> list[str]:
        """GENERATION_OFFLOAD_READ_URLS as a list (commas or spaces between URLs)."""
        return _url_list(self.generation_offload_read_urls)

    def offload_file_gid(self) -> int | None:
        """The group id GENERATION_OFFLOAD_FILE_GROUP names (None: owner-only files)."""
        group = self.generation_offload_file_group
        return None if group is None else group_id(group)

    def effective_redis_prefix(self) -> str:
        """REDIS_PREFIX if set (even empty), else the REDIS_PREFIX_RULE applied to APP_NAME."""
        if self.redis_prefix is not None:
            return self.redis_prefix
        app = self.app_name or "laravel"
        if self.redis_prefix_rule == "underscore":
            return laravel_slug(app, "_") + "_database_"
        if self.redis_prefix_rule == "hyphen":
            return laravel_slug(app, "-") + "-database-"
        return ""

    def prefix_warning(self) -> str | None:
        """A one-line note when a Laravel app would derive a prefix that genbuf does not
        apply (Laravel derives it from APP_NAME; genbuf does not guess the rule).

        Said by `config show` and `doctor` (set-up checks), not by every command: a cron
        job whose buffers sit under another prefix fails naming it (WrongPrefix).
        """
        if self.redis_prefix is None and self.redis_prefix_rule == "none" and self.app_name:
            return (
                "APP_NAME set, REDIS_PREFIX unset: no key prefix; "
                "set REDIS_PREFIX or REDIS_PREFIX_RULE"
            )
        return None

    def redis_configured(self) -> bool:
        """Whether REDIS_CLUSTER_NODES, REDIS_URL or REDIS_HOST says which Redis to use."""
        return bool(self.redis_cluster_nodes or self.redis_url or self.redis_host)

    def cluster_nodes(self) -> list[tuple[str, int]]:
        """The seed nodes of REDIS_CLUSTER_NODES as (host, port); empty: not a cluster.

        Each host follows REDIS_HOST's rule (``_url_host``); an IPv6 address goes in
        brackets, ``[::1]:7000``, since without them no one can tell where the port starts.
        """
        if not self.redis_cluster_nodes:
            return []
        nodes: list[tuple[str, int]] = []
        for item in self.redis_cluster_nodes.split(","):
            entry = item.strip()
            host, sep, port = entry.rpartition(":")
            bad = UsageError(
                f"invalid REDIS_CLUSTER_NODES entry {_masked(entry)!r}",
                hint="give seed nodes as host:port[,host:port…], e.g. 10.0.0.5:7000 or "
                "[fd00::5]:7000; credentials go in REDIS_USERNAME/REDIS_PASSWORD",
            )
            if not sep or not port.isdigit() or not 0 < int(port) < 65536:
                raise bad
            if ":" in host and not (host.startswith("[") and host.endswith("]")):
                raise bad
            try:
                authority = _url_host(host, "REDIS_CLUSTER_NODES", "REDIS_CLUSTER_NODES")
            except UsageError:
                raise bad from None
            nodes.append((_bare_host(authority), int(port)))
        return nodes

    def cluster_tls(self) -> bool:
        """Whether to speak TLS to cluster nodes: REDIS_SCHEME=tls, or a rediss:// REDIS_URL."""
        return self.redis_scheme == "tls" or (self.redis_url or "").startswith("rediss://")

    def offload_enabled(self) -> bool:
        """Whether large artifacts go to an object store (GENERATION_OFFLOAD_URL and _BYTES)."""
        return self.generation_offload_url is not None and self.generation_offload_bytes is not None

    def s3_endpoint(self) -> str | None:
        """AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else Laravel's AWS_ENDPOINT."""
        return self.aws_endpoint_url_s3 or self.aws_endpoint_url or self.aws_endpoint

    def database_configured(self) -> bool:
        """Whether DATABASE_URL or DB_CONNECTION says which database to use."""
        return self.database_url is not None or bool(self.db_connection)

    def effective_redis_url(self) -> str:
        """The Redis URL to connect to: REDIS_URL, else Laravel's REDIS_*; for a cluster,
        ``redis-cluster://`` and its seed nodes (what names it in messages).

        With neither, a UsageError: the in-process Redis (``memory://``) is used only
        when asked for, since chunks pushed into it vanish with the process.
        """
        if nodes := self.cluster_nodes():
            scheme = "rediss-cluster" if self.cluster_tls() else "redis-cluster"
            return f"{scheme}://{seed_list(nodes)}"
        if self.redis_url:
            return _checked_redis_url(self.redis_url)
        if not self.redis_host:
            raise UsageError(
                "Redis is not configured: neither REDIS_URL nor REDIS_HOST is set",
                hint="set REDIS_URL (or point --env-file at the app's .env); "
                "REDIS_URL=memory:// is an in-process Redis that ends with the command",
            )
        auth = ""
        if self.redis_password is not None:
            user = quote(self.redis_username or "", safe="")
            auth = f"{user}:{quote(self.redis_password.get_secret_value(), safe='')}@"
        host = self.redis_host.strip()
        if host.startswith("/"):  # a Unix socket, as phpredis takes it
            return f"unix://{auth}{quote(host)}?db={self.redis_db}"
        scheme, sep, rest = host.partition("://")
        if sep and scheme.lower() not in ("tcp", "tls", "ssl", "rediss"):
            raise UsageError(
                f"REDIS_HOST={_masked(host)!r}: {scheme}:// is not a Redis host genbuf knows",
                hint="give a host name, an IP address, tls://host or a socket path, or set "
                "REDIS_URL",
            )
        authority = _url_host(rest if sep else host, "REDIS_HOST", "REDIS_PORT", for_redis=True)
        # phpredis's tls://host: TLS to one node; so is REDIS_SCHEME=tls, which Laravel's
        # connector puts before the host (never the password in clear to a TLS port)
        tls = scheme.lower() != "tcp" if sep else self.redis_scheme == "tls"
        kind = "rediss" if tls else "redis"
        return f"{kind}://{auth}{authority}:{self.redis_port}/{self.redis_db}"

    def effective_database_url(self) -> str:
        """The SQLAlchemy URL: DATABASE_URL, else Laravel's DB_*, else the embedded SQLite file.

        The embedded default is announced by the CLI (see ``database_configured``).
        """
        if self.database_url is not None:
            return _normalise_database_url(self.database_url.get_secret_value())
        if not self.db_connection:
            return DEFAULT_SQLITE_URL
        connection = self.db_connection.lower()
        if connection == "sqlite":
            return f"sqlite:///{self.db_database or 'database/database.sqlite'}"
        drivers = {
            "pgsql": ("postgresql+psycopg", 5432),
            "mysql": ("mysql+pymysql", 3306),
            "mariadb": ("mariadb+pymysql", 3306),
        }
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
        if not self.db_database:  # else the server's default: a database named as the user
            raise UsageError(
                f"DB_CONNECTION={self.db_connection} without DB_DATABASE: which database?",
                hint="set DB_DATABASE (as the app's .env does), or DATABASE_URL",
            )
        database = quote(self.db_database, safe="")
        host = self.db_host.strip()
        if host.startswith("/"):  # a Unix socket's folder (pgsql) or file (mysql)
            if connection == "pgsql":  # libpq: the socket's folder, and the port names it
                return f"{driver}://{auth}/{database}?host={quote(host)}&port={port}"
            return f"{driver}://{auth}/{database}?unix_socket={quote(host)}"
        return f"{driver}://{auth}{_url_host(host, 'DB_HOST', 'DB_PORT')}:{port}/{database}"


def _url_list(value: str | None) -> list[str]:
    """URLs separated by commas or white space."""
    return [url for url in re.split(r"[\s,]+", value or "") if url]


def group_id(group: str) -> int:
    """The id of a group given by name or number; ValueError if this host has none such."""
    if group.isdigit():
        return int(group)
    import grp  # noqa: PLC0415  (POSIX only; needed only with a group set)

    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"no group {group!r} on this host") from None


_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _url_host(host: str, name: str, port_name: str, *, for_redis: bool = False) -> str:
    """``host`` (the setting ``name``) as a URL's authority has it: an IPv6 address in
    brackets; anything that is no host name or address is a UsageError (its credentials,
    if someone pasted ``user:password@`` into it, masked).

    The one rule for every host genbuf composes a URL with (REDIS_HOST, DB_HOST, the
    seeds of REDIS_CLUSTER_NODES). An IPv6 zone id (``fe80::1%eth0``) is spelled for the
    parser that reads the URL: redis-py unquotes the host (``%25``), SQLAlchemy does not.
    No percent escape in a name: the two parsers would read two hosts in one value.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            address = str(ipaddress.IPv6Address(host))
        except ValueError:
            raise UsageError(
                f"{name}={_masked(host)!r} is not a host name or an IP address",
                hint=f"give the port in {port_name}, not in {name}, and credentials in "
                "their own settings",
            ) from None
        return f"[{address.replace('%', '%25')}]" if for_redis else f"[{address}]"
    labels = host.removesuffix(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        raise UsageError(
            f"{name}={_masked(host)!r} is not a host name or an IP address",
            hint=f"check {name} in the app's .env (a name: labels of letters, digits and "
            "hyphens, 63 characters at most each)",
        )
    return host


def _checked_redis_url(url: str) -> str:
    """REDIS_URL as it is, unless an ``@`` follows its authority: redis-py ends the
    authority at the first ``/``, ``?`` or ``#``, so a password holding one and an ``@``
    made the rest of it the host it connected to (and printed)."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in ("redis", "rediss"):
        authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
        if "@" in rest[len(authority) :]:
            raise UsageError(
                f"invalid REDIS_URL {mask_url(url)}: an @ after the authority",
                hint="percent-encode @ : / # ? % in REDIS_URL's password, or set "
                "REDIS_HOST and REDIS_PASSWORD",
            )
    return url


def _bare_host(authority: str) -> str:
    """The host of an authority ``_url_host`` made: no brackets, no URL escape."""
    return authority.removeprefix("[").removesuffix("]").replace("%25", "%")


def seed_list(nodes: list[tuple[str, int]]) -> str:
    """Cluster seed nodes as ``host:port,…`` for a message or URL (IPv6 in brackets)."""
    return ",".join(
        f"{_url_host(h, 'REDIS_CLUSTER_NODES', '', for_redis=True)}:{p}" for h, p in nodes
    )


def _masked(value: str) -> str:
    """``value`` with whatever precedes its last ``@`` (credentials someone put in a host
    setting) replaced by ``***``, and cut at 80 characters (a message is one line)."""
    shown = f"***@{value.rpartition('@')[2]}" if "@" in value else value
    return shown if len(shown) <= 80 else shown[:80] + "…"


def _normalise_database_url(url: str) -> str:
    """Point a plain postgres URL at psycopg 3, the driver genbuffer ships with."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme.lower() in _PG_SCHEMES:
        return f"postgresql+psycopg://{rest}"
    return url


def laravel_slug(text: str, separator: str = "-") -> str:
    """Laravel's Str::slug: ASCII (as Str::ascii transliterates), lower case, runs of
    anything else become one separator."""
    from genbuffer.laravel_ascii import to_ascii  # noqa: PLC0415  (only with a prefix rule)

    flip = "_" if separator == "-" else "-"
    ascii_text = to_ascii(text)
    ascii_text = re.sub(rf"[{re.escape(flip)}]+", separator, ascii_text)
    ascii_text = ascii_text.replace("@", f"{separator}at{separator}")
    ascii_text = re.sub(rf"[^{re.escape(separator)}a-z0-9\s]+", "", ascii_text.lower())
    ascii_text = re.sub(rf"[{re.escape(separator)}\s]+", separator, ascii_text)
    return ascii_text.strip(separator)


_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|pass|pwd|secret|token)=)[^&#]*")


def mask_url(url: str) -> str:
    """Return ``url`` with its password (userinfo or ``?password=``) replaced by ``***``.

    Parsed by hand rather than with urlsplit: a raw password may hold ``/``, ``#``,
    ``?`` or ``@``, which a URL parser takes for the start of the path, fragment,
    query or host, and would then print.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        # a URL missing its slashes (postgresql:/u:pw@h/db): masked up to its last @
        scheme, colon, rest = url.partition(":")
        if colon and "@" in rest:
            rest = "***@" + rest.rpartition("@")[2]
        return _QUERY_SECRET.sub(r"\1***", f"{scheme}{colon}{rest}")
    at = rest.rfind("@")
    if at >= 0:
        userinfo, host = rest[:at], rest[at + 1 :]
        if ":" in userinfo:
            rest = f"{userinfo.split(':', 1)[0]}:***@{host}"
    return _QUERY_SECRET.sub(r"\1***", f"{scheme}://{rest}")


ENV_FILE_VARIABLE = "GENBUF_ENV_FILE"


def env_file_from_environment() -> Path | None:
    """The env file named by GENBUF_ENV_FILE (what `genbuf --env-file` defaults to)."""
    value = os.environ.get(ENV_FILE_VARIABLE, "").strip()
    return Path(value) if value else None


def load_settings(env_file: str | os.PathLike[str] | None = None) -> Settings:
    """Load Settings from the environment and ``env_file`` (by default GENBUF_ENV_FILE's,
    as `genbuf --env-file` does); bad values are a UsageError.

    ``/dev/null`` is an empty env file (the usual way to say "none", overriding
    GENBUF_ENV_FILE): nothing is read from it and relative paths stay the working
    directory's, as without an env file."""
    env_file = Path(env_file) if env_file is not None else env_file_from_environment()
    if env_file is not None and not env_file.is_file():
        if _is_null_device(env_file):
            env_file = None
        else:
            raise _unusable_env_file(env_file)
    try:
        settings = Settings(_env_file=env_file)
    except UnicodeDecodeError as exc:
        raise _not_utf8(env_file, exc) from None
    except ValidationError as exc:
        raise _invalid_setting(exc, env_file) from None
    return _beside_env_file(settings, env_file)


def _is_null_device(path: Path) -> bool:
    try:
        return path.samefile(os.devnull)
    except OSError:
        return False


def _unusable_env_file(env_file: Path) -> UsageError:
    """What is wrong with an env file path that is no regular file, said as it is."""
    import stat  # noqa: PLC0415  (only on this error)

    hint = "give the path of the app's .env (--env-file or GENBUF_ENV_FILE)"
    try:
        mode = env_file.stat().st_mode
    except OSError:
        if env_file.is_symlink():
            target = env_file.readlink()
            return UsageError(
                f"env file {env_file} is a symbolic link to {target}, which does not exist",
                hint=hint,
            )
        return UsageError(f"env file not found: {env_file}", hint=hint)
    if stat.S_ISDIR(mode):
        return UsageError(
            f"env file {env_file} is a directory",
            hint=f"give the file in it, e.g. --env-file {env_file / '.env'}",
        )
    kind = "a pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
    return UsageError(
        f"env file {env_file} is {kind}, not a regular file",
        hint="give a regular file (relative paths are taken from its folder, and `config "
        "show` reads it again), or set the variables in the environment; --env-file "
        "/dev/null reads none",
    )


def _not_utf8(env_file: Path | None, exc: UnicodeDecodeError) -> UsageError:
    """The env file's first byte that is not UTF-8, by line (and the variable it sets:
    never its value, which may be a password)."""
    where = f"byte {exc.start}: {exc.reason}"
    try:
        raw = env_file.read_bytes() if env_file is not None else b""
        raw.decode("utf-8")
    except UnicodeDecodeError as found:  # read again for its line
        line_start = raw.rfind(b"\n", 0, found.start) + 1
        line = raw[line_start : found.start]
        name = re.match(rb"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_.]*)\s*=", line)
        setting = f" ({name.group(1).decode()})" if name else ""
        number = raw.count(b"\n", 0, found.start) + 1
        where = f"line {number}{setting}, byte {found.start} (0x{raw[found.start]:02x})"
    except OSError:
        pass
    given = shlex.quote(str(env_file))
    return UsageError(
        f"env file {env_file} is not UTF-8 text: {where}",
        hint=f"save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {given} > {given}.utf8 (if it "
        "was Latin-1), then point --env-file at that",
    )


def _invalid_setting(exc: ValidationError, env_file: Path | None) -> UsageError:
    """A setting's bad value: its name, the value (never a secret's), where it was set
    and what it takes; other bad settings named too."""
    errors = exc.errors()
    first = errors[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    name = field.upper() or "setting"
    said = first["msg"].removeprefix("Value error, ")  # a validator's own words
    info = Settings.model_fields.get(field)
    shown = ""  # a validator's message names the value; a secret's is never shown
    secret = info is None or "SecretStr" in str(info.annotation)
    if not secret and first["type"] != "value_error" and isinstance(first["input"], str):
        shown = "=" + repr(_masked(first["input"]))
    others = sorted({str(e["loc"][0]).upper() for e in errors[1:] if e["loc"]} - {name})
    message = f"invalid setting {name}{shown}: {said}"
    if others:
        message += f" (and {', '.join(others)})"
    in_environment = any(k.lower() == field for k, v in os.environ.items() if v != "")
    if env_file is None:
        source = "in the environment"
    elif in_environment:
        source = "in the environment (which wins over the env file)"
    else:
        source = f"in the env file {env_file}"
    takes = _takes(info) if info is not None else None
    return UsageError(
        message, hint=f"{name} is set {source}: " + (f"give {takes}" if takes else "correct it")
    )


def _takes(info: Any) -> str | None:
    """What a setting's field accepts, in words: a number and its range, a boolean, one
    of its choices; None for free text (a validator's message says what is wrong)."""
    import types  # noqa: PLC0415  (only on this error)
    from typing import get_args, get_origin  # noqa: PLC0415

    kinds = [info.annotation]
    if isinstance(info.annotation, types.UnionType):
        kinds = [kind for kind in get_args(info.annotation) if kind is not type(None)]
    kind = kinds[0] if len(kinds) == 1 else None
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(str(choice) for choice in get_args(kind))
    if kind is bool:
        return "true or false"
    if kind not in (int, float):
        return None
    whole = kind is int
    low = high = ""
    for limit in info.metadata:
        if (gt := getattr(limit, "gt", None)) is not None:
            low = f"{gt + 1}" if whole else f"above {gt}"
        if (ge := getattr(limit, "ge", None)) is not None:
            low = f"{ge}" if whole else f"{ge} or more"
        if (lt := getattr(limit, "lt", None)) is not None:
            high = f"{lt - 1}" if whole else f"below {lt}"
        if (le := getattr(limit, "le", None)) is not None:
            high = f"{le}" if whole else f"at most {le}"
    if not whole:
        return " ".join(["a number", " and ".join(bound for bound in (low, high) if bound)]).strip()
    if low and high:
        return f"a whole number from {low} to {high}"
    return "a whole number" + (
        f" of at least {low}" if low else f" of at most {high}" if high else ""
    )


def _beside_env_file(settings: Settings, env_file: Path | None) -> Settings:
    """``settings`` with a relative METADATA_VALIDATION_LOG, and a Laravel SQLite database
    (DB_CONNECTION=sqlite), taken from the env file's folder: a cron line's working
    directory is no place for either (the folder of the app's .env is, as Laravel keeps
    storage/ and database/ beside it)."""
    if env_file is None:
        return settings
    home = env_file.absolute().parent
    update: dict[str, object] = {}
    if not settings.metadata_validation_log.is_absolute():
        update["metadata_validation_log"] = home / settings.metadata_validation_log
    if settings.database_url is None and (settings.db_connection or "").lower() == "sqlite":
        # Laravel's database_path('database.sqlite') default, and a relative DB_DATABASE as
        # artisan (run from the app's base path, beside .env) reads it
        database = Path(settings.db_database or "database/database.sqlite")
        if str(database) != ":memory:" and not database.is_absolute():
            update["db_database"] = str(home / database)
    return settings.model_copy(update=update) if update else settings
