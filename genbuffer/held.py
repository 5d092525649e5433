"""One Redis connection of its own for a producer's hot loop.

redis-py's per-command path (pool checkout and release, stale-data poll, event
dispatch, observability hooks, retry wrapper) costs more than the round trip
itself on loopback. A streaming producer calls ``push_chunk`` once per token, so
that path keeps one connection of its own (built as the client's pool builds
one, same URL, timeouts and TLS) and sends pre-packed commands on it. A failed
connection is closed and the caller retries on redis-py's full path, with its
retry policy; a forked child opens its own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis

__all__ = ["HeldConnection", "HeldConnectionLost"]


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
        connection stays usable) and ``HeldConnectionLost`` when the connection
        failed, after giving it back: the caller retries on redis-py's own path.
        """
        with self._lock:
            conn = self._conn
            try:
                if conn is None or self._pid != os.getpid():
                    conn = self._open()
                conn.send_packed_command(conn.pack_command(*args), check_health=False)
                return conn.read_response()
            except redis.exceptions.ResponseError:
                raise
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
                self._drop(conn)
                raise HeldConnectionLost from None
            except BaseException:
                # e.g. KeyboardInterrupt between send and read: the reply is still in
                # flight, so the connection can't be trusted for the next command.
                self._drop(conn)
                raise

    def close(self) -> None:
        """Close the connection (the next call opens another)."""
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.disconnect()
            self._conn = None

    def _open(self) -> Any:
        self._conn = None  # a socket inherited across a fork is the parent's: leave it be
        conn = self._pool.connection_class(**self._pool.connection_kwargs)
        conn.connect()
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _drop(self, conn: Any) -> None:
        self._conn = None
        if conn is not None:
            conn.disconnect()


class HeldConnectionLost(Exception):
    """The held connection failed mid-command and was closed."""
