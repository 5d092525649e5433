"""Writes sent once: unsequenced pushes on one server.

redis-py's retry sends a command again after a connection error, when the first
may have run; an unsequenced push sent twice appends its chunks twice. So these
writes go through a twin of the client's pool (same URL, timeouts, TLS and set-up:
a ``redis.ConnectionPool`` built from the client's, with ``retry`` of no retries)
and are sent once: a connection error after sending is ``SentUnconfirmed`` (the
caller says what is in doubt), one while writing is ``NotWritten`` (it did not run),
one before it is raised as it is.

A pipeline (push_many's MULTI/EXEC transactions) takes a connection of the twin
pool, which polls it before handing it out. A single command (push_chunk, once per
token) is the measured exception (bench/NOTES.md, row 1): through redis-py's client
path (pool checkout, hooks, retry wrapper) push_chunk made 0.45x a raw RPUSH loop on
a loaded machine, against 0.90x on a connection of its own. So single commands go
on one connection made by the twin pool and kept outside it, through redis-py's
connection API (``make_connection``, ``connect``, ``can_read``,
``send_command``, ``read_response``, ``disconnect``; tested at both ends of
the pin, ``make test-lowest``), the command packed by hiredis (redis.packer). It is
polled before each command, so one the server closed while idle is replaced while nothing is at
stake; it is used under a lock (threads), and a forked child opens its own.
"""

from __future__ import annotations

import os
import threading
import weakref
from typing import Any

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from genbuffer.redis.connection import NotWritten, SentUnconfirmed

__all__ = ["OnceClient", "never_sent", "not_written", "unconfirmed"]

_LOST = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError)


def never_sent(exc: Exception) -> bool:
    """Whether a connection error happened while connecting, before any command was
    written (redis-py's connect errors say "connecting to"): then a retry is safe."""
    return "connecting to" in str(exc)


def not_written(exc: Exception) -> bool:
    """Whether a connection error happened while a command was being written (redis-py's
    write errors say "writing to socket", 6.1 to 8.2): Redis never received the whole
    command, so it did not run (nor a MULTI/EXEC it was part of)."""
    return "writing to socket" in str(exc)


def unconfirmed(exc: Exception) -> SentUnconfirmed:
    """What a connection error of a write sent once stands for: NotWritten when it
    happened while the write was being written, else SentUnconfirmed (it may have run)."""
    return NotWritten(str(exc)) if not_written(exc) else SentUnconfirmed(str(exc))


def _twin(client: redis.Redis) -> redis.Redis:
    """A client of ``client``'s server on a pool of its own that never retries."""
    pool = client.connection_pool
    kwargs = {**pool.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
    return redis.Redis(connection_pool=redis.ConnectionPool(pool.connection_class, **kwargs))


class OnceClient:
    """Commands and pipelines sent once, on one server (see the module)."""

    def __init__(self, client: redis.Redis) -> None:
        self._source = client
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None  # the twin
        self._conn: Any = None  # single commands' connection, outside the twin's pool
        # a forked child forgets the parent's connections (leaves its sockets be) rather
        # than asking for the pid before every command
        forget = weakref.WeakMethod(self._forget)
        os.register_at_fork(after_in_child=lambda: (method := forget()) and method())

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._client, self._conn = None, None

    def _twin(self) -> redis.Redis:
        """The twin, built on first use."""
        if self._client is None:
            self._client = _twin(self._source)
        return self._client

    def _ready(self) -> Any:
        """The connection of single commands: open, with nothing waiting to be read (an
        idle one the server closed shows EOF: it is replaced before anything is sent)."""
        pool = self._twin().connection_pool
        conn: Any = self._conn
        if conn is not None:
            try:
                stale = conn.can_read(timeout=0)
            except _LOST:
                stale = True
            if not stale:
                return conn
            conn.disconnect()
            self._conn = None
        conn = pool.make_connection()  # the pool's class, URL, timeouts, TLS and set-up
        conn.connect()
        self._conn = conn
        return conn

    def execute(self, *args: Any) -> Any:
        """Send one command once; its reply (as the server sent it). A connection error
        after sending is SentUnconfirmed (NotWritten while writing); an error reply is
        raised as redis-py raises it (the connection stays in step)."""
        with self._lock:
            conn = self._ready()  # (a failure here: nothing was sent)
            try:
                # packed by the connection's HiredisPacker (genbuffer.redis.packer)
                conn.send_command(*args, check_health=False)
                return conn.read_response()
            except redis.exceptions.ResponseError:
                raise  # an error reply, read whole
            except _LOST as exc:
                self._drop()
                raise unconfirmed(exc) from None
            except BaseException:
                self._drop()  # e.g. interrupted between send and read: out of step
                raise

    def _drop(self) -> None:
        if self._conn is not None:
            self._conn.disconnect()
        self._conn = None

    def pipeline(self, *, transaction: bool = False) -> Any:
        """A pipeline (or a MULTI/EXEC transaction) on a connection of the twin's pool."""
        with self._lock:
            return self._twin().pipeline(transaction=transaction)

    def close(self) -> None:
        """Close the connections (the next command opens another)."""
        with self._lock:
            if self._client is not None:
                self._drop()
                self._client.connection_pool.disconnect()
            self._client, self._conn = None, None
