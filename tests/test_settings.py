"""Settings: Laravel names, env files, precedence, masking and bad values."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest
from redis.connection import parse_url
from sqlalchemy.engine import make_url

from genbuffer.errors import UsageError
from genbuffer.laravel_ascii import table as transliterations
from genbuffer.settings import MEMORY_REDIS_URL, Settings, laravel_slug, load_settings, mask_url
from tests.support.urls import IN_CI

LARAVEL_ENV = """\
APP_NAME=Laravel
REDIS_CLIENT=phpredis
REDIS_HOST=10.1.2.3
REDIS_PASSWORD=null
REDIS_PORT=6380
REDIS_DB=2
REDIS_PREFIX=laravel_database_
DB_CONNECTION=pgsql
DB_HOST=db.internal
DB_PORT=5433
DB_DATABASE=app
DB_USERNAME=app
DB_PASSWORD="s3cr:et@"
GENERATION_CHUNK_TTL=3600
METADATA_VALIDATION_STRICT=true
"""


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No genbuffer-related variables leak in from the machine running the tests."""
    for name in list(Settings.model_fields):
        monkeypatch.delenv(name.upper(), raising=False)


def test_unconfigured_redis_is_a_usage_error_not_an_in_process_one(clean_env: None) -> None:
    """With nothing configured: no Redis (exit 2, with a hint), never a throw-away one;
    the database defaults to the embedded SQLite file, which the CLI announces."""
    settings = load_settings()
    with pytest.raises(UsageError) as raised:
        settings.effective_redis_url()
    assert raised.value.exit_code == 2 and "memory://" in (raised.value.hint or "")
    assert not settings.redis_configured() and not settings.database_configured()
    assert Settings(redis_url=MEMORY_REDIS_URL).effective_redis_url() == MEMORY_REDIS_URL
    assert settings.effective_database_url() == "sqlite:///storage/genbuffer.sqlite3"
    assert settings.generation_chunk_ttl == 86400 and not settings.metadata_validation_strict


def test_laravel_env_file_is_read_as_it_is(clean_env: None, tmp_path: Path) -> None:
    """A Laravel .env: REDIS_* and DB_* build the URLs; 'null' is null; quotes are stripped."""
    env = tmp_path / ".env"
    env.write_text(LARAVEL_ENV)
    settings = load_settings(env)
    assert settings.redis_password is None
    assert settings.effective_redis_url() == "redis://10.1.2.3:6380/2"
    assert settings.redis_prefix == "laravel_database_"
    assert settings.effective_database_url() == (
        "postgresql+psycopg://app:s3cr%3Aet%40@db.internal:5433/app"
    )
    assert settings.generation_chunk_ttl == 3600 and settings.metadata_validation_strict


def test_a_laravel_sqlite_database_is_beside_the_env_file(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """DB_CONNECTION=sqlite without DB_DATABASE is Laravel's database_path('database.sqlite'),
    beside the app's .env, and a relative DB_DATABASE is read from there as artisan does;
    never a file in the cron line's working directory. Absolute and :memory: are kept."""
    app = tmp_path / "app"
    app.mkdir()
    monkeypatch.chdir(tmp_path)
    env = app / ".env"
    env.write_text("DB_CONNECTION=sqlite\n")
    wanted = app / "database" / "database.sqlite"
    assert load_settings(env).effective_database_url() == f"sqlite:///{wanted}"
    env.write_text("DB_CONNECTION=sqlite\nDB_DATABASE=storage/app.sqlite\n")
    assert load_settings(env).effective_database_url() == f"sqlite:///{app}/storage/app.sqlite"
    env.write_text("DB_CONNECTION=sqlite\nDB_DATABASE=/srv/app.sqlite\n")
    assert load_settings(env).effective_database_url() == "sqlite:////srv/app.sqlite"
    env.write_text("DB_CONNECTION=sqlite\nDB_DATABASE=:memory:\n")
    assert load_settings(env).effective_database_url() == "sqlite:///:memory:"


def test_a_relative_audit_log_is_beside_the_env_file(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With an env file, a relative METADATA_VALIDATION_LOG (the default included) is
    taken from the env file's folder, as Laravel's storage/ beside its .env, not from
    the working directory a cron line happens to run in; an absolute one is kept, and
    without an env file a relative one stays relative."""
    app = tmp_path / "app"
    app.mkdir()
    elsewhere = tmp_path / "cron"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    env = app / ".env"
    env.write_text(LARAVEL_ENV)
    wanted = app / "storage" / "logs" / "metadata-validation.log"
    assert load_settings(env).metadata_validation_log == wanted
    assert load_settings(Path("../app/.env")).metadata_validation_log.resolve() == wanted
    env.write_text(LARAVEL_ENV + "METADATA_VALIDATION_LOG=logs/audit.jsonl\n")
    assert load_settings(env).metadata_validation_log == app / "logs" / "audit.jsonl"
    monkeypatch.setenv("METADATA_VALIDATION_LOG", "/var/log/genbuf/audit.jsonl")
    assert load_settings(env).metadata_validation_log == Path("/var/log/genbuf/audit.jsonl")
    monkeypatch.delenv("METADATA_VALIDATION_LOG")
    unfiled = load_settings().metadata_validation_log
    assert unfiled == Path("storage/logs/metadata-validation.log")
    description = Settings.model_fields["metadata_validation_log"].description or ""
    assert "env file" in description


def test_environment_wins_over_env_file(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A variable in the environment overrides the same one in the env file."""
    env = tmp_path / ".env"
    env.write_text(LARAVEL_ENV)
    monkeypatch.setenv("REDIS_URL", "redis://override:6379/0")
    assert load_settings(env).effective_redis_url() == "redis://override:6379/0"


def test_without_an_env_file_no_env_file_source_is_read(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No env file: settings come from the environment with no env-file source at all
    (one that would read nothing still looks up every field); a .env in the working
    directory is not read, as before."""
    from pydantic_settings import DotEnvSettingsSource  # noqa: PLC0415

    def refused(self: DotEnvSettingsSource) -> dict[str, object]:
        raise AssertionError("the env-file source was read without an env file")

    (tmp_path / ".env").write_text(LARAVEL_ENV)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDIS_URL", "redis://from-env:6379/1")
    monkeypatch.setattr(DotEnvSettingsSource, "__call__", refused)
    settings = load_settings()
    assert settings.effective_redis_url() == "redis://from-env:6379/1"
    assert settings.redis_prefix is None and not settings.database_configured()
    with pytest.raises(AssertionError, match="env-file source"):
        load_settings(tmp_path / ".env")


def test_with_an_env_file_its_source_sits_between_environment_and_defaults(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Laravel .env: its values fill what the environment leaves unset, as always."""
    env = tmp_path / ".env"
    env.write_text(LARAVEL_ENV)
    monkeypatch.setenv("REDIS_PREFIX", "from_env_")
    settings = load_settings(env)
    assert settings.redis_prefix == "from_env_"  # the environment wins
    assert settings.effective_redis_url() == "redis://10.1.2.3:6380/2"  # the file fills
    assert settings.generation_chunk_ttl == 3600  # over the default


@pytest.mark.parametrize(
    ("connection", "expected"),
    [
        ("sqlite", "sqlite:///database/database.sqlite"),
        ("mysql", "mysql+pymysql://u@h:3306/d"),
        ("mariadb", "mariadb+pymysql://u@h:3306/d"),
        ("pgsql", "postgresql+psycopg://u@h:5432/d"),
    ],
)
def test_db_connection_names(clean_env: None, connection: str, expected: str) -> None:
    """Each Laravel DB_CONNECTION maps to its SQLAlchemy URL."""
    fields = {"db_connection": connection, "db_host": "h", "db_username": "u"}
    if connection != "sqlite":
        fields["db_database"] = "d"
    assert Settings(**fields).effective_database_url() == expected


def test_plain_postgres_urls_use_psycopg3(clean_env: None) -> None:
    """postgres:// and postgresql:// are pointed at the psycopg 3 driver."""
    for scheme in ("postgres", "postgresql"):
        url = Settings(database_url=f"{scheme}://u@h/d").effective_database_url()
        assert url == "postgresql+psycopg://u@h/d"


def test_unknown_db_connection_is_a_usage_error(clean_env: None) -> None:
    """An unsupported DB_CONNECTION says which ones are supported."""
    with pytest.raises(UsageError, match="not supported"):
        Settings(db_connection="oracle").effective_database_url()


@pytest.mark.parametrize(
    ("name", "value"),
    [("GENERATION_CHUNK_TTL", "soon"), ("GENERATION_CHUNK_TTL", "0"), ("REDIS_PORT", "99999")],
)
def test_bad_values_are_usage_errors_naming_the_setting(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """A bad value is a UsageError that names the variable."""
    monkeypatch.setenv(name, value)
    with pytest.raises(UsageError, match=name):
        load_settings()


def test_missing_env_file_is_a_usage_error(tmp_path: Path) -> None:
    """--env-file pointing nowhere is a usage error."""
    with pytest.raises(UsageError, match="env file not found"):
        load_settings(tmp_path / "missing.env")


def test_mask_url_hides_only_the_password() -> None:
    """The password is masked; user, host and database stay readable."""
    assert (
        mask_url("postgresql+psycopg://app:s3cret@h:5432/d")
        == "postgresql+psycopg://app:***@h:5432/d"
    )
    assert mask_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_secrets_are_not_in_the_repr(clean_env: None) -> None:
    """Passwords are SecretStr: repr and str do not show them."""
    settings = Settings(
        db_password="hunter2", redis_password="hunter3", database_url="x://u:hunter4@h/d"
    )
    assert "hunter" not in repr(settings) and "hunter" not in str(settings)


_LARAVEL_PREFIXES = Path(__file__).parent / "fixtures" / "laravel_prefixes.json"


def _prefix(app_name: str, rule: str) -> str:
    settings = Settings(_env_file=None, app_name=app_name, redis_prefix_rule=rule)  # type: ignore[call-arg]
    return settings.effective_redis_prefix()


def test_prefix_rules_give_the_prefixes_laravel_computes() -> None:
    """REDIS_PREFIX_RULE derives from APP_NAME what Laravel 8.83's Str::slug does, for
    transliterated letters too (Straße → strasse, Ø → o, Æ → ae), per the committed
    table that tests/php/slug.php computed."""
    table = json.loads(_LARAVEL_PREFIXES.read_text(encoding="utf-8"))["prefixes"]
    assert {"Straße & Söhne", "Ørsted Ænergy"} <= {row["app_name"] for row in table}
    for row in table:
        assert _prefix(row["app_name"], "underscore") == row["underscore"], row
        assert _prefix(row["app_name"], "hyphen") == row["hyphen"], row


def _laravel_slugs(names: list[str]) -> list[dict[str, str]]:
    """Str::slug of each name by Laravel itself (tests/php/slug.php); skips without PHP
    and Laravel, fails under CI=true."""
    php = shutil.which("php")
    autoload = Path("/usr/share/php/Illuminate/Support/autoload.php")
    if php is None or not autoload.exists():
        reason = "php-cli and php-laravel-framework (Debian) are not installed"
        if IN_CI:
            pytest.fail(f"CI=true and {reason}", pytrace=False)
        pytest.skip(reason)
    script = Path(__file__).parent / "php" / "slug.php"
    done = subprocess.run(
        [php, str(script)], input=json.dumps(names), capture_output=True, text=True, check=True
    )
    slugs: list[dict[str, str]] = json.loads(done.stdout)
    return slugs


@pytest.mark.php
def test_prefix_rules_agree_with_laravel_run_by_php() -> None:
    """The committed table is what Laravel computes today, and so is every one of a few
    thousand random names made of the characters Laravel transliterates (alone, in the
    multi-letter keys it looks up, beside ones it drops, '@', separators, spaces)."""
    table = json.loads(_LARAVEL_PREFIXES.read_text(encoding="utf-8"))["prefixes"]
    names = [row["app_name"] for row in table]
    rng = random.Random(20)
    keys = list(transliterations())
    others = ["@", "_", "-", " ", "\t", "a", "Z", "7", "東", "🚀", "\u0301", "ǅ", "."]
    for _ in range(3000):
        names.append("".join(rng.choice(keys + others) for _ in range(rng.randint(1, 6))))
    laravel = _laravel_slugs(names)
    for row, name in zip(table, names, strict=False):
        assert laravel[names.index(name)]["underscore"] + "_database_" == row["underscore"]
    for name, slugs in zip(names, laravel, strict=True):
        assert laravel_slug(name, "_") == slugs["underscore"], name
        assert laravel_slug(name, "-") == slugs["hyphen"], name


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("10.1.2.3", "redis://:p%20w@10.1.2.3:6380/2"),
        ("::1", "redis://:p%20w@[::1]:6380/2"),
        ("[::1]", "redis://:p%20w@[::1]:6380/2"),
        ("/run/redis/redis.sock", "unix://:p%20w@/run/redis/redis.sock?db=2"),
        ("tls://cache.internal", "rediss://:p%20w@cache.internal:6380/2"),
        ("tcp://cache.internal", "redis://:p%20w@cache.internal:6380/2"),
    ],
)
def test_every_form_of_laravels_redis_host_is_a_url_to_that_server(
    clean_env: None, host: str, expected: str
) -> None:
    """REDIS_HOST as Laravel's phpredis takes it: an IPv6 address (bracketed), a Unix
    socket, tls://host (TLS to one node): each the URL of that server, never a string
    redis-py reads as another one (a socket path glued before `:6379/0` is localhost)."""
    settings = Settings(redis_host=host, redis_port=6380, redis_db=2, redis_password="p w")
    assert settings.effective_redis_url() == expected


@pytest.mark.parametrize("host", ["cache.internal:6380", "a b", "http://cache", ""])
def test_a_redis_host_that_is_no_host_is_a_usage_error(clean_env: None, host: str) -> None:
    """A port glued to the host, a space, another scheme: exit 2 naming REDIS_HOST (an
    empty one: Redis is not configured)."""
    with pytest.raises(UsageError, match="REDIS_HOST"):
        Settings(redis_host=host).effective_redis_url()


@pytest.mark.parametrize(
    ("connection", "host", "expected"),
    [
        ("pgsql", "::1", "postgresql+psycopg://u@[::1]:5432/app"),
        ("mysql", "fd00::5", "mysql+pymysql://u@[fd00::5]:3306/app"),
        (
            "pgsql",
            "/var/run/postgresql",
            "postgresql+psycopg://u@/app?host=/var/run/postgresql&port=5432",
        ),
        (
            "mysql",
            "/run/mysqld/mysqld.sock",
            "mysql+pymysql://u@/app?unix_socket=/run/mysqld/mysqld.sock",
        ),
    ],
)
def test_every_form_of_laravels_db_host_is_a_url_to_that_server(
    clean_env: None, connection: str, host: str, expected: str
) -> None:
    """DB_HOST as Laravel takes it: an IPv6 address (bracketed), a Unix socket."""
    settings = Settings(db_connection=connection, db_host=host, db_database="app", db_username="u")
    assert settings.effective_database_url() == expected


def test_a_db_host_with_a_port_and_a_missing_db_database_are_usage_errors(clean_env: None) -> None:
    """DB_HOST=db.local:5433 names DB_PORT; no DB_DATABASE is no database, not the
    server's default one (PostgreSQL's: the user's name), where tables would be made."""
    with pytest.raises(UsageError, match="DB_HOST") as raised:
        Settings(
            db_connection="pgsql", db_host="db.local:5433", db_database="app"
        ).effective_database_url()
    assert raised.value.hint is not None and "DB_PORT" in raised.value.hint
    for database in (None, ""):
        with pytest.raises(UsageError, match="DB_DATABASE"):
            Settings(db_connection="pgsql", db_database=database).effective_database_url()


def test_load_settings_reads_genbuf_env_file_and_takes_a_str_path(
    clean_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python API reads the env file as `genbuf` does: GENBUF_ENV_FILE when no path
    is given, and a path given as a str; a missing one is a UsageError with a hint."""
    env = tmp_path / ".env"
    env.write_text("REDIS_HOST=10.1.2.3\nREDIS_PORT=6380\n")
    monkeypatch.setenv("GENBUF_ENV_FILE", str(env))
    assert load_settings().effective_redis_url() == "redis://10.1.2.3:6380/0"
    monkeypatch.delenv("GENBUF_ENV_FILE")
    assert load_settings(str(env)).effective_redis_url() == "redis://10.1.2.3:6380/0"
    with pytest.raises(UsageError, match="env file not found") as raised:
        load_settings(str(tmp_path / "missing.env"))
    assert raised.value.hint is not None


def test_a_retention_past_a_century_is_refused_when_settings_load(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GENERATION_CHUNKS_RETENTION_DAYS=999999999: exit 2 naming the setting when the
    settings load, not an age the operator never typed when purge-chunks runs."""
    monkeypatch.setenv("GENERATION_CHUNKS_RETENTION_DAYS", "999999999")
    with pytest.raises(UsageError, match="invalid setting GENERATION_CHUNKS_RETENTION_DAYS"):
        load_settings()


_HOSTILE_PASSWORD = "p@:/#?% x\r\n"


@pytest.mark.parametrize("host", ["::1", "10.1.2.3", "cache.internal", "/run/my sock/r.sock?db=9"])
def test_a_composed_redis_url_carries_the_exact_password_and_server(
    clean_env: None, host: str
) -> None:
    """A password (and user) holding every URL delimiter, a space and CRLF comes back
    from redis-py's parser as it was, and the server is the one named, never one
    spelled inside the password."""
    settings = Settings(redis_host=host, redis_password=_HOSTILE_PASSWORD, redis_username="us@r:x")
    parsed = parse_url(settings.effective_redis_url())
    assert (parsed["password"], parsed["username"]) == (_HOSTILE_PASSWORD, "us@r:x")
    assert parsed.get("path", parsed.get("host")) == host


@pytest.mark.parametrize(
    ("host", "zone"), [("fe80::1%eth0", "eth0"), ("fe80::1%12", "12"), ("[fe80::1%25]", "25")]
)
def test_an_ipv6_zone_id_reaches_redis_and_the_database_as_given(
    clean_env: None, host: str, zone: str
) -> None:
    """fe80::1%12: redis-py unquotes the host it parses (a bare %12 became \\x12) and
    SQLAlchemy does not: each URL spells the zone so that its parser gives it back."""
    redis_url = Settings(redis_host=host).effective_redis_url()
    assert parse_url(redis_url)["host"] == f"fe80::1%{zone}"
    database_url = Settings(
        db_connection="pgsql", db_host=host, db_database="app"
    ).effective_database_url()
    assert make_url(database_url).host == f"fe80::1%{zone}"


@pytest.mark.parametrize(
    "host", ["h%3A6380", "h%40x", "a" * 64, ".".join(["a" * 63] * 5), "-h", "h..x"]
)
def test_a_host_no_resolver_takes_is_a_usage_error_naming_it(clean_env: None, host: str) -> None:
    """A percent escape (redis-py decodes it, SQLAlchemy does not: two servers for one
    value), a label over 63 characters or a name over 253 (the IDNA codec's traceback
    at connect): exit 2 naming the variable."""
    with pytest.raises(UsageError, match="REDIS_HOST"):
        Settings(redis_host=host).effective_redis_url()
    with pytest.raises(UsageError, match="DB_HOST"):
        Settings(db_connection="pgsql", db_host=host, db_database="a").effective_database_url()


@pytest.mark.parametrize(
    "host", ["user:s3cr3t@cache", "redis://:s3cr3t@cache", "tls://u:s3cr3t@cache", "s3cr3t@h:1"]
)
def test_credentials_pasted_into_a_host_are_never_echoed(clean_env: None, host: str) -> None:
    """REDIS_HOST/DB_HOST holding user:password@: the error names the variable and masks
    the credentials, as every URL genbuf prints is masked."""
    with pytest.raises(UsageError, match="REDIS_HOST") as redis_error:
        Settings(redis_host=host).effective_redis_url()
    with pytest.raises(UsageError, match="DB_HOST") as db_error:
        Settings(db_connection="pgsql", db_host=host, db_database="a").effective_database_url()
    for error in (redis_error.value, db_error.value):
        assert "s3cr3t" not in f"{error} {error.hint}"


def test_redis_scheme_tls_is_tls_to_a_single_host_too(clean_env: None) -> None:
    """REDIS_SCHEME=tls (Laravel's `scheme`, which phpredis puts before the host) with
    REDIS_HOST: TLS, never the password in clear to the same host."""
    settings = Settings(redis_host="cache.internal", redis_scheme="tls", redis_password="pw")
    assert settings.effective_redis_url().startswith("rediss://")


@pytest.mark.parametrize(
    ("nodes", "seeds", "url"),
    [
        (
            "[::1]:7000,10.0.0.5:7001",
            [("::1", 7000), ("10.0.0.5", 7001)],
            "[::1]:7000,10.0.0.5:7001",
        ),
        ("[0:0::1]:7000", [("::1", 7000)], "[::1]:7000"),
        ("[fe80::1%eth0]:7000", [("fe80::1%eth0", 7000)], "[fe80::1%25eth0]:7000"),
        ("cache-1.internal:7000", [("cache-1.internal", 7000)], "cache-1.internal:7000"),
    ],
)
def test_cluster_seeds_follow_the_one_host_rule(
    clean_env: None, nodes: str, seeds: list[tuple[str, int]], url: str
) -> None:
    """REDIS_CLUSTER_NODES' hosts are checked and bracketed by the rule REDIS_HOST
    follows (one rule: the URL that names the cluster agrees with the seeds)."""
    settings = Settings(redis_cluster_nodes=nodes)
    assert settings.cluster_nodes() == seeds
    assert settings.effective_redis_url() == f"redis-cluster://{url}"


@pytest.mark.parametrize(
    "nodes",
    ["fe80::1", "2001:db8::7000", "::1:7000", ":s3cr3t@10.0.0.1:7000", "h o:7000", "a/b:7000"],
)
def test_a_cluster_seed_that_is_no_host_is_a_usage_error(clean_env: None, nodes: str) -> None:
    """An IPv6 address without brackets (where does the port start?), credentials, a
    space, a path: exit 2 naming REDIS_CLUSTER_NODES, the credentials masked (they
    reached the connect error as a host name)."""
    with pytest.raises(UsageError, match="REDIS_CLUSTER_NODES") as error:
        Settings(redis_cluster_nodes=nodes).cluster_nodes()
    assert "s3cr3t" not in f"{error.value} {error.value.hint}"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql:/u:s3cr3t@h/db",
        "postgresql:u:s3cr3t@h/db",
        "redis:/:s3cr3t@h:6379/0",
    ],
)
def test_mask_url_masks_a_url_missing_its_slashes(url: str) -> None:
    """A URL typed with one slash or none does not parse: the error that prints it
    must not print its password."""
    assert "s3cr3t" not in mask_url(url)


@pytest.mark.parametrize(
    "url", ["redis://:se@cr/et@cache.internal:6379/0", "rediss://u:a#b@c@cache.internal:6380"]
)
def test_a_redis_url_with_an_unencoded_at_in_its_password_is_a_usage_error(
    clean_env: None, url: str
) -> None:
    """redis-py ends the authority at the first / or #: the rest of the password became
    the host it connected to (and printed in its error). Exit 2 naming REDIS_URL."""
    with pytest.raises(UsageError, match="REDIS_URL") as error:
        Settings(redis_url=url).effective_redis_url()
    assert "cr/et" not in str(error.value)
    assert "a#b" not in str(error.value)


@pytest.mark.parametrize(
    "case",
    [
        ("REDIS_PORT", "abc", "a whole number from 1 to 65535"),
        ("GENERATION_CHUNK_MAX_LEN", "0", "a whole number of at least 1"),
        ("REDIS_SOCKET_TIMEOUT", "0", "a number above 0 and at most 3600"),
        ("METADATA_VALIDATION_STRICT", "maybe", "true or false"),
        ("REDIS_PREFIX_RULE", "dash", "one of none, underscore, hyphen"),
    ],
)
@pytest.mark.parametrize("in_file", [True, False])
def test_an_invalid_setting_says_its_value_where_it_is_set_and_what_it_takes(
    clean_env: None,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    case: tuple[str, str, str],
    in_file: bool,
) -> None:
    """REDIS_PORT=abc (new-user pass): one error line with the value given, and a hint
    saying where it is set (the env file, or the environment that wins over it) and what
    the setting takes; it printed pydantic's words alone."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from genbuffer.cli import app  # noqa: PLC0415

    name, value, takes = case
    monkeypatch.delenv("GENBUF_ENV_FILE", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text(f"REDIS_URL=memory://\n{name}={value}\n")
    if not in_file:
        monkeypatch.setenv(name, value)
    with pytest.raises(UsageError) as raised:
        load_settings(env_file)
    assert raised.value.message.startswith(f"invalid setting {name}={value!r}: "), raised.value
    where = f"in the env file {env_file}" if in_file else "in the environment (which wins"
    assert raised.value.hint is not None and raised.value.hint.startswith(f"{name} is set {where}")
    assert raised.value.hint.endswith(f": give {takes}"), raised.value.hint
    done = CliRunner().invoke(app, ["--env-file", str(env_file), "status"])
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"error: {raised.value.message}",
        f"hint: {raised.value.hint}",
    ]


def test_invalid_settings_are_all_named_and_a_validators_value_said_once(
    clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two bad values: the first said, the other named; a validator's own message (which
    names the value) is not repeated."""
    monkeypatch.setenv("REDIS_PORT", "abc")
    monkeypatch.setenv("DB_PORT", "x")
    with pytest.raises(UsageError) as raised:
        load_settings()
    assert raised.value.message.endswith("(and DB_PORT)"), raised.value.message
    assert (
        raised.value.hint
        == "REDIS_PORT is set in the environment: give a whole number from 1 to 65535"
    )
    monkeypatch.delenv("DB_PORT")
    monkeypatch.delenv("REDIS_PORT")
    monkeypatch.setenv("GENERATION_OFFLOAD_URL", "s3://bad bucket/x")
    with pytest.raises(UsageError) as raised:
        load_settings()
    assert raised.value.message.startswith("invalid setting GENERATION_OFFLOAD_URL: ")
    assert raised.value.message.count("bad bucket/x") == 1


def test_an_env_file_that_is_not_utf8_names_the_line_and_variable_never_the_value(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A Latin-1 byte deep in a long env file (new-user pass: a byte offset alone, no
    hint): the line and the variable it sets, never its value (a password), and a hint
    to convert it."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from genbuffer.cli import app  # noqa: PLC0415

    monkeypatch.delenv("GENBUF_ENV_FILE", raising=False)
    env_file = tmp_path / ".env"
    padding = b"".join(b"# comment line %05d\n" % number for number in range(1000))
    env_file.write_bytes(b"REDIS_URL=memory://\n" + padding + b"DB_PASSWORD=s3cr\xe9t\n")
    offset = env_file.read_bytes().index(b"\xe9")
    with pytest.raises(UsageError) as raised:
        load_settings(env_file)
    said = raised.value.message
    assert (
        said
        == f"env file {env_file} is not UTF-8 text: line 1002 (DB_PASSWORD), byte {offset} (0xe9)"
    )
    assert "s3cr" not in said and raised.value.hint is not None
    assert raised.value.hint.startswith(
        f"save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {env_file}"
    )
    done = CliRunner().invoke(app, ["--env-file", str(env_file), "status"])
    assert done.exit_code == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [f"error: {said}", f"hint: {raised.value.hint}"]


def test_dev_null_is_an_empty_env_file(
    clean_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--env-file /dev/null (the usual "none", e.g. to override GENBUF_ENV_FILE for one
    command) said "env file not found" of a file that exists: it reads as an empty env
    file, the settings the environment's alone, a relative audit log the working
    directory's (not /dev's)."""
    from typer.testing import CliRunner  # noqa: PLC0415

    from genbuffer.cli import app  # noqa: PLC0415

    monkeypatch.setenv("REDIS_PORT", "6390")
    for given in ("/dev/null", None):
        if given is None:  # GENBUF_ENV_FILE=/dev/null
            monkeypatch.setenv("GENBUF_ENV_FILE", "/dev/null")
        settings = load_settings(given)
        assert settings.redis_port == 6390
        assert settings.metadata_validation_log == Path("storage/logs/metadata-validation.log")
    monkeypatch.setenv("GENBUF_ENV_FILE", str(tmp_path / "app.env"))  # overridden, never read
    done = CliRunner().invoke(app, ["--env-file", "/dev/null", "config", "show", "--json"])
    assert done.exit_code == 0, done.output
    rows = {row["name"]: row for row in json.loads(done.stdout)["settings"]}
    assert rows["REDIS_PORT"]["value"] == "6390"


def test_an_env_file_that_is_no_regular_file_is_said_as_it_is(
    clean_env: None, tmp_path: Path
) -> None:
    """A pipe (--env-file <(…)), a directory, a dangling symbolic link: each said as what
    it is, with a hint, instead of "env file not found" of something that exists."""
    fifo = tmp_path / "fifo.env"
    os.mkfifo(fifo)
    dangling = tmp_path / "link.env"
    dangling.symlink_to(tmp_path / "gone.env")
    cases = {
        fifo: f"env file {fifo} is a pipe, not a regular file",
        tmp_path: f"env file {tmp_path} is a directory",
        dangling: f"env file {dangling} is a symbolic link to {tmp_path / 'gone.env'}, which "
        "does not exist",
        tmp_path / "missing.env": f"env file not found: {tmp_path / 'missing.env'}",
    }
    for path, said in cases.items():
        with pytest.raises(UsageError) as raised:
            load_settings(path)  # never opened: a pipe nobody writes would block
        assert raised.value.message == said
        assert raised.value.hint
