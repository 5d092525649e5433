"""A real PgBouncer in transaction mode on a loopback port, started by the tests.

``PgBouncer(upstream_port=5432).start()`` writes a pgbouncer.ini in a directory of its
own (``pool_mode = transaction``, ``auth_type = trust``, every database name passed
through to ``127.0.0.1:5432``) and runs Debian's ``pgbouncer`` in the foreground as a
child process; ``stop()`` ends it. PgBouncer refuses to run as root, so under root it
runs as the ``postgres`` user (the owner of its directory). Transaction pooling is
what the managed poolers (RDS Proxy, Supavisor) do: a client's consecutive
transactions may run on different server connections, so nothing that outlives a
transaction (a session advisory lock, a prepared statement, a ``SET``) survives.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.support.servers import free_port
from tests.support.wait import wait_until

__all__ = ["PgBouncer", "pgbouncer_binary", "through"]

_INI = """\
[databases]
* = host={host} port={upstream_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
pool_mode = transaction
ignore_startup_parameters = extra_float_digits,options
max_client_conn = 500
default_pool_size = {pool_size}
server_lifetime = 3600
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
admin_users = {user}
"""


def pgbouncer_binary() -> str | None:
    """Where Debian's pgbouncer is (it lives in /usr/sbin, often not on PATH)."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


def through(url: str, port: int) -> str:
    """``url`` (a database URL on 127.0.0.1) pointed at the pooler's port instead."""
    parts = urlsplit(url)
    userinfo, _, _ = parts.netloc.rpartition("@")
    netloc = f"{userinfo}@127.0.0.1:{port}" if userinfo else f"127.0.0.1:{port}"
    return urlunsplit(parts._replace(netloc=netloc))


class PgBouncer:
    """One pgbouncer process, its ini, userlist and log in a directory of its own."""

    def __init__(
        self,
        *,
        upstream_host: str = "127.0.0.1",
        upstream_port: int = 5432,
        users: tuple[str, ...] = ("postgres",),
        pool_size: int = 20,
    ) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise RuntimeError("pgbouncer is not installed")
        self.binary = binary
        self.port = free_port()
        self.upstream = (upstream_host, upstream_port)
        self.users = users
        self.pool_size = pool_size
        # not under pytest's tmp_path: that is private to root, and pgbouncer runs as postgres
        self.directory = Path(tempfile.mkdtemp(prefix="genbuf-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: str | None = "postgres" if os.geteuid() == 0 else None

    def _write_config(self) -> Path:
        user = self._run_as or pwd.getpwuid(os.geteuid()).pw_name
        ini = self.directory / "pgbouncer.ini"
        ini.write_text(
            _INI.format(
                host=self.upstream[0],
                upstream_port=self.upstream[1],
                port=self.port,
                directory=self.directory,
                pool_size=self.pool_size,
                user=user,
            )
        )
        (self.directory / "userlist.txt").write_text(
            "".join(f'"{name}" ""\n' for name in self.users)
        )
        if self._run_as is not None:
            owner = pwd.getpwnam(self._run_as)
            for path in (self.directory, *self.directory.iterdir()):
                os.chown(path, owner.pw_uid, owner.pw_gid)
        return ini

    def start(self) -> PgBouncer:
        """Start pgbouncer and wait until it accepts connections."""
        ini = self._write_config()
        self.process = subprocess.Popen(
            [self.binary, str(ini)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            user=self._run_as,
            group=self._run_as,
            extra_groups=[] if self._run_as else None,
        )
        try:
            wait_until(self._listening, 15, "pgbouncer to listen")
        except AssertionError as failed:
            self.stop()
            raise RuntimeError(f"{failed}: {self.log()[-500:]}") from None
        return self

    def _listening(self) -> bool:
        """Whether pgbouncer accepts connections (it must not have exited)."""
        assert self.process is not None and self.process.poll() is None, "pgbouncer exited"
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
        except OSError:
            return False
        return True

    def url(self, database_url: str) -> str:
        """A database URL on the upstream server, pointed at this pooler."""
        return through(database_url, self.port)

    def log(self) -> str:
        """What pgbouncer logged."""
        path = self.directory / "pgbouncer.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """End pgbouncer (SIGTERM: it closes its server connections) and remove its files."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
        shutil.rmtree(self.directory, ignore_errors=True)
