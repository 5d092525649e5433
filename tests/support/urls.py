"""Where the test servers are (overridable by environment), and URLs built from them.

Redis is hermetic by default: unless ``REDIS_TEST_URL`` names a server, the first test
that needs one starts a private ``redis-server`` on a free loopback port for this
process (each pytest-xdist worker its own), which dies with the process. The suite
never touches a Redis it did not start unless given its URL.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import signal
import subprocess
import tempfile
from functools import cache
from pathlib import Path

__all__ = [
    "IN_CI",
    "MARIADB_ADMIN_URL",
    "POSTGRES_ADMIN_URL",
    "REPO_ROOT",
    "pg_url",
    "redis_test_url",
]

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


_LIBC = ctypes.CDLL("libc.so.6", use_errno=True)  # loaded here, not in a forked child


def _die_with_parent() -> None:
    # PR_SET_PDEATHSIG: the server goes when the test process goes, even by kill -9
    _LIBC.prctl(1, signal.SIGTERM)


@cache
def redis_test_url() -> str:
    """``REDIS_TEST_URL`` if set; else the URL of a redis-server private to this process,
    started on first use (RuntimeError when redis-server is not installed)."""
    if given := os.environ.get("REDIS_TEST_URL"):
        return given
    from tests.support.servers import free_port, wait_for_ping  # noqa: PLC0415

    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (Debian's redis-server package)")
    directory = tempfile.mkdtemp(prefix="genbuf-test-redis-")
    port = free_port()
    options = ["--port", str(port), "--bind", "127.0.0.1", "--dir", directory, "--save", ""]
    options += ["--appendonly", "no", "--logfile", f"{directory}/redis.log"]
    process = subprocess.Popen(
        [binary, *options],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=_die_with_parent,  # noqa: PLW1509  (one prctl call, no lock taken)
    )

    def stop() -> None:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)

    atexit.register(stop)
    url = f"redis://127.0.0.1:{port}/0"
    wait_for_ping(url)
    return url


def __getattr__(name: str) -> str:
    """``REDIS_TEST_URL``, resolved (and the private server started) on first use."""
    if name == "REDIS_TEST_URL":
        return redis_test_url()
    raise AttributeError(name)
