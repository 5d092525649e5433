"""One Redis connection of its own for a producer's hot paths.

redis-py's per-command path (pool checkout and release, stale-data poll, event
dispatch, observability hooks, retry wrapper, argument filtering) costs more than
the round trip itself on loopback. A streaming producer calls ``push_chunk`` once
per token, and ``push_many`` packs hundreds of thousands of arguments, so both
keep one connection of their own (made by the client's pool: same URL, timeouts
and TLS, but never returned to it) and send commands packed by hiredis on it.
It uses redis-py's public connection API (ConnectionPool.make_connection;
Connection.connect, send_packed_command, read_response, can_read, disconnect):
low-level, so this module is the only one that touches it, and the versions it
runs on are pinned and tested at both ends (.ci/run). The connection is polled
before each command, so one the server closed is replaced before anything is sent;
a failed connection is closed and reported as ``HeldConnectionLost``, which says
whether the command had been sent (then it may have run: each caller decides whether
a retry is safe). A forked child opens its own connection.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NoReturn

import redis
from hiredis import pack_command

__all__ = ["HeldConnection", "HeldConnectionLost", "HeldSession", "pack"]

_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


class HeldConnectionLost(Exception):
    """The held connection failed (before or during a command) and was closed.

    ``sent``: whether the command had begun to be sent (then it may have run)."""

    def __init__(self, *, sent: bool) -> None:
        super().__init__("the held connection failed" + (" after sending" if sent else ""))
        self.sent = sent


def pack(commands: Sequence[tuple[Any, ...]]) -> list[bytes]:
    """Commands in the Redis protocol (bytes, str and int arguments), ready to send."""
    return [pack_command(command) for command in commands]


class HeldSession:
    """Pipelined commands on the held connection: send some, read their replies later."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def send(self, packed: list[bytes]) -> None:
        """Send packed commands (see ``pack``) without waiting for their replies."""
        self._conn.send_packed_command(packed, check_health=False)

    def read(self, count: int) -> list[Any]:
        """The next ``count`` replies; an error reply is returned as its exception."""
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(self._conn.read_response())
            except redis.exceptions.ResponseError as exc:
                replies.append(exc)
        return replies


class HeldConnection:
    """A connection kept between calls, outside the client's pool; thread-safe, fork-aware."""

    def __init__(self, client: redis.Redis) -> None:
        self._pool: Any = client.connection_pool
        self._conn: Any = None
        self._pid = 0
        self._lock = threading.Lock()

    def call(self, *args: Any) -> Any:
        """Send one command and return its reply.

        Raises redis-py's ``ResponseError`` family for an error reply (the
        connection stays usable) and ``HeldConnectionLost`` when the connection failed.
        """
        # session() inlined: this is the once-per-token path
        with self._lock:
            conn = self._conn
            sent = False
            try:
                # polled before every command (a syscall, well under the round trip): a
                # connection the server closed is replaced while nothing is at stake,
                # so a failure after sending is one whose outcome is truly unknown
                conn = self._ready()
                sent = True  # from here on the command may reach the server and run
                conn.send_packed_command([pack_command(args)], check_health=False)
                reply = conn.read_response()
            except BaseException as exc:
                # an error reply was read whole: the connection is still in step
                in_step = isinstance(exc, redis.exceptions.ResponseError)
                self._fail(conn, exc, in_step=in_step, sent=sent)
            return reply

    @contextmanager
    def session(self) -> Iterator[HeldSession]:
        """The connection, exclusively, for the block; closed if the block raises.

        Every reply a block sends for must be read inside it, so the next user
        finds the connection in step.
        """
        with self._lock:
            conn = None
            try:
                conn = self._ready()
                yield HeldSession(conn)
            except BaseException as exc:
                # what the block sent and whether it ran is the block's to say
                self._fail(conn, exc, in_step=False, sent=conn is not None)

    def close(self) -> None:
        """Close the connection (the next call opens another)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.disconnect()
            self._conn = None

    def _ready(self) -> Any:
        """The open connection, or a new one: after a fork, or when the idle one went bad."""
        conn = self._conn
        if conn is not None and self._pid == os.getpid():
            # An idle connection with something to read was closed by the server (EOF)
            # or holds a stray reply: replace it before sending, when nothing is at stake.
            try:
                stale = conn.can_read(timeout=0)
            except _LOST:
                stale = True
            if not stale:
                return conn
            conn.disconnect()
        self._conn = None  # a socket inherited across a fork is the parent's: leave it be
        conn = self._pool.make_connection()  # the pool's class, URL, timeouts and TLS
        conn.connect()
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _fail(self, conn: Any, exc: BaseException, *, in_step: bool, sent: bool) -> NoReturn:
        """Re-raise ``exc``; close the connection unless it is known to be in step.

        A failed connection becomes HeldConnectionLost. Anything else (e.g. a
        KeyboardInterrupt between send and read) may leave replies in flight, so
        the connection is not trusted for the next command.
        """
        if in_step:
            raise exc
        self._drop(conn)
        if isinstance(exc, _LOST):
            raise HeldConnectionLost(sent=sent) from None
        raise exc

    def _drop(self, conn: Any) -> None:
        self._conn = None
        if conn is not None:
            conn.disconnect()
