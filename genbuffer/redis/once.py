"""Writes sent once: the client of unsequenced pushes on one server.

redis-py's retry sends a command again after a connection error, when the first
may have run; an unsequenced push sent twice appends its chunks twice. So these
writes go through a twin of the client (same URL, timeouts, TLS and set-up: a
``redis.ConnectionPool`` built from the client's, with ``retry`` of no retries) that
sends each command once: a connection error after sending is ``SentUnconfirmed``
(the caller says what is in doubt), one while connecting is raised as it is.

A streaming producer pushes once per token, so a single command goes on the twin's
one connection (redis-py's documented ``single_connection_client``: no pool checkout
per command, which costs more than the round trip on loopback). A connection idle
for IDLE_CHECK seconds is checked with a PING first (a failed PING costs nothing: the
command then reconnects), so one the server closed while idle (a restart, its
``timeout``) is replaced while nothing is at stake. Pipelines take a connection of
the twin's pool, which polls it before handing it out. Thread-safe (one lock around
the connection); a forked child builds its own twin.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from genbuffer.redis.connection import SentUnconfirmed

__all__ = ["IDLE_CHECK", "OnceClient", "never_sent"]

IDLE_CHECK = 1.0  # seconds idle after which the connection is checked before a write

_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def never_sent(exc: Exception) -> bool:
    """Whether a connection error happened while connecting, before any command was
    written (redis-py's connect errors say "connecting to"): then a retry is safe."""
    return "connecting to" in str(exc)


def _twin(client: redis.Redis) -> redis.Redis:
    """A client of ``client``'s server whose pool never retries, on one connection."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(
        connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs),
        single_connection_client=True,
    )


class OnceClient:
    """Commands and pipelines sent once, on one server (see the module)."""

    def __init__(self, client: redis.Redis) -> None:
        self._source = client
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._pid = 0
        self._used = 0.0  # monotonic time of the last command

    def _twin(self) -> redis.Redis:
        """The twin; a new one in a forked child (the parent's connections are left be)."""
        if self._client is None or self._pid != os.getpid():
            self._client, self._pid = _twin(self._source), os.getpid()
        return self._client

    def execute(self, *args: Any, **options: Any) -> Any:
        """Send one command once; its reply. A connection error after sending is
        SentUnconfirmed; an error reply is raised as redis-py raises it."""
        with self._lock:
            client: Any = self._twin()
            if time.monotonic() - self._used >= IDLE_CHECK:
                # closed while idle: the PING fails, and the command connects anew
                with contextlib.suppress(*_LOST):
                    client.ping()
            try:
                return client.execute_command(*args, **options)
            except _LOST as exc:
                if never_sent(exc):
                    raise
                raise SentUnconfirmed(str(exc)) from None
            finally:
                self._used = time.monotonic()

    def pipeline(self, *, transaction: bool = False) -> Any:
        """A pipeline (or a MULTI/EXEC transaction) on a connection of the twin's pool."""
        with self._lock:
            return self._twin().pipeline(transaction=transaction)

    def close(self) -> None:
        """Close the twin's connections (the next command opens another)."""
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
                self._client.connection_pool.disconnect()
            self._client = None
