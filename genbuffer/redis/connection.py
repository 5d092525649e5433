"""Connecting to Redis: the client, its URL, errors, and the sources of genbuffer's Lua scripts.

This is the seam between genbuffer and redis-py: every other module of
``genbuffer.redis`` gets its client from a ``RedisTarget`` built here and maps errors
with ``redis_errors``; scripts run through ``genbuffer.redis.scripts.ScriptRunner``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib.resources import files
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.cluster import ClusterNode
from redis.retry import Retry

from genbuffer.errors import OperationFailed, RedisUnavailable, UsageError
from genbuffer.redis.packer import HiredisPacker
from genbuffer.settings import MEMORY_REDIS_URL, mask_url, seed_list

__all__ = [
    "SCRIPT_RELOADS",
    "NoTouch",
    "NotWritten",
    "RedisTarget",
    "SentUnconfirmed",
    "another_type",
    "connect_cluster",
    "connect_redis",
    "load_script",
    "redis_errors",
    "text",
    "wrong_type",
]

# a genbuf script's refusal of a field it places chunks by ("snapshot.lua: trimmed of
# KEY is not a count: abc"), raised before it wrote anything
_FIELD_REFUSED = re.compile(r"[a-z_]+\.lua: [a-z_]+ of .+ is not (a count|an integer): ")

# `memory://` is an in-process Redis: one server per URL, shared by every client of
# this process, so the demo's separate commands see the same buffers.
_MEMORY_SERVERS: dict[str, Any] = {}


SCRIPT_RELOADS = 5  # a script cache flushed this many times in a row: give up (exit 3)


def load_script(name: str) -> str:
    """The source of ``genbuffer/lua/<name>.lua``."""
    return (files("genbuffer") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


class NoTouch:
    """Whether this client's connections read keys without touching them.

    Every connection genbuffer opens asks for ``CLIENT NO-TOUCH ON`` (Redis 7.2+,
    Valkey): its reads (status, metrics, inspect, a dry run) then leave a key's LRU
    clock alone, and ``OBJECT IDLETIME`` says when anyone else last touched it. An
    older server (7.0: every read resets the clock) refuses; one refusal is enough
    for the clock to be no evidence of idleness (see ``genbuffer.engine.idleness``).
    """

    def __init__(self) -> None:
        self._accepted = False
        self._refused = False

    @property
    def active(self) -> bool:
        """Whether every connection so far reads without touching (and one did)."""
        return self._accepted and not self._refused

    def ask(self, connection: Any) -> None:
        """Send CLIENT NO-TOUCH ON on a connection that has just been set up."""
        try:
            # no health check: it would PING with its own retries inside this connect's
            connection.send_command("CLIENT", "NO-TOUCH", "ON", check_health=False)
            connection.read_response()
        except redis.exceptions.ResponseError:
            self._refused = True  # an unknown subcommand: reads reset the LRU clock
        else:
            self._accepted = True

    def on_connect(self, connection: Any) -> None:
        """redis-py's ``redis_connect_func`` for a single server: the usual set-up
        (AUTH, SELECT, HELLO) as redis-py does it on connect (no health check), then
        NO-TOUCH."""
        connection.on_connect_check_health(check_health=False)
        self.ask(connection)


class SentUnconfirmed(Exception):
    """A write was sent and its connection failed before the reply: it may have run.
    The caller, who knows what the write carried, says so (PushOutcomeUnknown)."""


class NotWritten(SentUnconfirmed):
    """A write whose connection failed while it was being written: Redis never received
    it whole, so it did not run (what a SentUnconfirmed caller that does not know this
    one takes for in doubt, it takes for not appended)."""


def connect_redis(url: str, timeout: float = 5.0, no_touch: NoTouch | None = None) -> redis.Redis:
    """Open a client for ``url``; ``memory://`` is an in-process fakeredis server.

    ``timeout`` bounds each attempt to connect or to get a reply, so a frozen server
    is reported (exit 3) within a few attempts of it, not after minutes. Given
    ``no_touch``, each connection asks for CLIENT NO-TOUCH and records the answer.
    """
    if url.startswith(MEMORY_REDIS_URL):
        try:
            import fakeredis  # noqa: PLC0415  (only the embedded backend needs it: an extra)
        except ImportError:
            raise UsageError(
                f"REDIS_URL={url} is the embedded Redis, which needs fakeredis (not "
                "installed): pip install 'genbuffer[embedded]'"
            ) from None
        server = _MEMORY_SERVERS.setdefault(url, fakeredis.FakeServer())
        client: redis.Redis = fakeredis.FakeRedis(server=server)
        return client
    try:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=30,
            # one retry: redis-py retries the connection's handshake inside each
            # attempt of a command too, so a frozen server costs (1 + retries)² timeouts
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=1),
            redis_connect_func=None if no_touch is None else no_touch.on_connect,
            command_packer=HiredisPacker(),  # (genbuffer.redis.packer: CPU a command)
        )
    except ValueError as exc:
        raise UsageError(f"invalid REDIS_URL {mask_url(url)}: {exc}") from None


def connect_cluster(
    nodes: list[tuple[str, int]],
    *,
    username: str | None = None,
    password: str | None = None,
    tls: bool = False,
    timeout: float = 5.0,
    no_touch: NoTouch | None = None,
) -> redis.RedisCluster:
    """A Redis Cluster client bootstrapped from ``nodes`` (seed nodes, or one managed
    configuration endpoint); the slot map is read from the first that answers.

    A cluster whose slots are not all served is refused here (exit 3), not at the
    first key that lands in a hole."""
    url = "redis-cluster://" + seed_list(nodes)
    try:
        with redis_errors(url):
            return redis.RedisCluster(
                startup_nodes=[_node(host, port) for host, port in nodes],
                username=username,
                password=password,
                ssl=tls,
                socket_connect_timeout=timeout,
                socket_timeout=timeout,
                require_full_coverage=True,
                retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=3),
                # RedisCluster sets each node connection up itself, then calls this
                redis_connect_func=None if no_touch is None else no_touch.ask,
            )
    except redis.exceptions.RedisClusterException as exc:
        raise RedisUnavailable(
            f"Redis Cluster is unreachable at {url}: {str(exc).splitlines()[0]}",
            hint="check REDIS_CLUSTER_NODES (host:port of live nodes), credentials and TLS",
        ) from None


def _node(host: str, port: int) -> ClusterNode:
    """A seed node (redis-py's ClusterNode is untyped)."""
    node: ClusterNode = ClusterNode(host, port)  # type: ignore[no-untyped-call]
    return node


def _mapped(url: str, exc: BaseException) -> Exception | None:  # noqa: PLR0911, PLR0912  (one per kind)
    """The error ``redis_errors`` raises instead of ``exc`` (None: ``exc`` as it is)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, redis.exceptions.ClusterDownError | redis.exceptions.TryAgainError):
        # a failover under way (redis-py strips the CLUSTERDOWN / TRYAGAIN word)
        return RedisUnavailable(
            f"Redis Cluster at {mask_url(url)} is not serving: {first}",
            hint="a failover may be under way: run the command again in a few seconds",
        )
    if isinstance(exc, redis.exceptions.ClusterError):
        # "TTL exhausted": MOVED, ASK or TRYAGAIN on every try, as while a slot migrates
        # (a reshard) with the keys of one command on both sides
        return RedisUnavailable(
            f"Redis Cluster at {mask_url(url)} kept redirecting the command ({first}): "
            "a slot is moving between nodes",
            hint="a reshard or failover is under way: run the command again when it is over",
        )
    credentials = redis.exceptions.AuthenticationError | redis.exceptions.AuthorizationError
    refused = ("NOAUTH", "WRONGPASS", "Protocol error: unauthenticated")
    # (the last: a command of many arguments sent unauthenticated, as redis-py 6 sends one
    # without HELLO; Redis 7 ends the connection with it)
    if isinstance(exc, credentials) or str(exc).startswith(refused):
        # (as the database side: the server is there, the credentials are refused)
        return RedisUnavailable(
            f"Redis at {mask_url(url)} refused the credentials: {first}",
            hint="check REDIS_PASSWORD and REDIS_USERNAME (or the user:password in REDIS_URL)",
        )
    if isinstance(exc, redis.exceptions.ResponseError):
        text = str(exc)
        if "DB index is out of range" in text:
            return UsageError(
                f"Redis at {mask_url(url)} has no such database: {exc}",
                hint="check REDIS_DB (or the /N at the end of REDIS_URL)",
            )
        if text.startswith(("OOM", "EXECABORT")) or "maxmemory" in text:
            return OperationFailed(
                f"Redis at {mask_url(url)} refused a write: {first}",
                hint="Redis is full: raise maxmemory, or compact and delete buffers; "
                "nothing that was refused was written",
            )
        if text.startswith("Protocol error: invalid bulk length"):
            # refused as it was read, before it ran; the server closes the connection
            return OperationFailed(
                f"Redis at {mask_url(url)} refused a command: {first} (an argument, a "
                "chunk say, longer than its proto-max-bulk-len); nothing of it ran",
                hint="split the chunk into smaller ones, or raise proto-max-bulk-len: "
                "sending it again fails the same way",
            )
        if _FIELD_REFUSED.match(text):
            # one of genbuf's scripts stopped, before it wrote, on a value in a buffer's
            # hash that it cannot place chunks by (edited by hand, or a faulty producer)
            return OperationFailed(
                f"Redis at {mask_url(url)}: {first}",
                hint="set that field of the buffer's hash right (or HDEL it) and run "
                "again; nothing was written",
            )
        if "WRONGTYPE" in text:
            # (as a command of its own, a script's or a pipeline's, as redis-py words them)
            return another_type(url, exc)
        if "Script attempted to access a non local key" in text:
            # a slot moving between nodes under a script (ASK or TRYAGAIN inside it)
            return RedisUnavailable(
                f"Redis Cluster at {mask_url(url)} refused a script on a key whose slot is "
                f"moving: {first}",
                hint="a reshard is under way: run the command again when it is over",
            )
        if text.startswith("READONLY"):
            return RedisUnavailable(
                f"Redis at {mask_url(url)} is a read-only replica: {first}",
                hint="point REDIS_URL at the primary (after a failover, the new one)",
            )
        return None
    if isinstance(exc, redis.exceptions.RedisClusterException):  # no node answers
        return RedisUnavailable(
            f"Redis Cluster is unreachable at {mask_url(url)}: {first}",
            hint="check REDIS_CLUSTER_NODES and that the cluster's nodes are up",
        )
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return RedisUnavailable(
            f"Redis is unreachable at {mask_url(url)}: {first}",
            hint="check REDIS_URL (or REDIS_HOST/REDIS_PORT) and that the server is up",
        )
    return None


def another_type(
    url: str, exc: BaseException, done: str = "", *, kept: str | None = None
) -> OperationFailed:
    """A key genbuf uses (a buffer's list or hash, the events stream, the fleet's
    hash) holding another type of value than genbuf keeps there (WRONGTYPE), in one
    line (``done``: what was written before it, said after the error; ``kept``: what
    the refused call left written, said in the hint instead of "nothing")."""
    first = str(exc).strip().splitlines()[0]
    then = "genbuf's scripts write nothing then" if kept is None else kept
    return OperationFailed(
        f"Redis at {mask_url(url)}: a key genbuf uses holds another type of value than "
        f"genbuf keeps there: {first}{done}",
        hint="something else wrote a key under genbuf's names: see what it holds "
        f"(redis-cli TYPE; a buffer's keys: inspect-generation --json); {then}",
    )


class redis_errors:
    """Turn connection-level redis-py errors into RedisUnavailable (exit 3), and the
    refusals they stand for into their own errors (a class, not a generator: it wraps
    every push, once per token)."""

    __slots__ = ("url",)

    def __init__(self, url: str) -> None:
        self.url = url

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: object, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            mapped = _mapped(self.url, exc)
            if mapped is not None:
                raise mapped from None


def scan_pages(client: redis.Redis, pattern: str, page: int) -> Iterator[list[str]]:
    """The keys SCAN finds for ``pattern``, as text, in lists of up to ``page`` (COUNT
    ``page``; never KEYS): what discovery and surveys describe a page at a time."""
    names: list[str] = []
    for raw in client.scan_iter(match=pattern, count=page):
        names.append(text(raw))
        if len(names) == page:
            yield names
            names = []
    if names:
        yield names


def text(value: bytes | str) -> str:
    """A reply as text (bytes decoded as UTF-8, undecodable bytes replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


@dataclass(frozen=True)
class RedisTarget:
    """A client and what names its server and keys: the URL (masked in errors), the
    key prefix, Laravel's APP_NAME (it names the prefix rule in hints), whether
    the server is a Redis Cluster (``cluster``: every script touches one slot, so where
    a buffer's keys live there is ``genbuffer.redis.layout``'s to say), and whether its
    reads leave keys untouched (``no_touch``)."""

    client: redis.Redis
    url: str = ""
    prefix: str = ""
    app_name: str | None = None
    cluster: bool = False
    no_touch: NoTouch = field(default_factory=NoTouch)


def wrong_type(reply: object) -> bool:
    """Whether a pipeline's reply says its key holds another type than the command's (a
    key under the prefix that no producer of buffers wrote: not a buffer, skipped)."""
    return isinstance(reply, redis.exceptions.ResponseError) and str(reply).startswith("WRONGTYPE")
