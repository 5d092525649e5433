"""Redis: push, snapshot, paged read, acknowledge, inspect. With held.py, the only `import redis`.

Compaction reads a buffer by *absolute* chunk position: the meta hash keeps
``trimmed`` (chunks already acknowledged and removed from the head of the list)
and ``stream_id`` (one life of the buffer). A chunk at list index ``i`` has
position ``trimmed + i``, so a compactor can acknowledge exactly what it
committed while producers keep appending and other compactors keep reading.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from importlib.resources import files
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff
from redis.retry import Retry

from genbuffer import keys
from genbuffer.errors import OperationFailed, RedisUnavailable, StreamChanged, UsageError
from genbuffer.held import HeldConnection, HeldConnectionLost
from genbuffer.settings import MEMORY_REDIS_URL, Settings, mask_url
from genbuffer.transactions import chunk_bytes, push_transactions, total_bytes

__all__ = [
    "BufferSnapshot",
    "FoundBuffer",
    "GenerationBuffer",
    "KeyInfo",
    "PushResult",
    "connect_redis",
]

log = logging.getLogger(__name__)

PUSH_BATCH = 1000  # chunks per Lua call: far below Lua's unpack() limit of ~8000 values
PUSH_PIPELINE = 16  # batch scripts sent per round trip by push_many
READ_PAGE = 2000  # chunks per LRANGE page while compacting …
PAGE_BYTES = 8 * 1024 * 1024  # … or fewer, so that a page weighs about this much
LEASE_SECONDS = 600  # a buffer being compacted lives at least this long

# `memory://` is an in-process Redis: one server per URL, shared by every client of
# this process, so the demo's separate commands see the same buffers.
_MEMORY_SERVERS: dict[str, Any] = {}


SCRIPT_RELOADS = 5  # a script cache flushed this many times in a row: give up (exit 3)


def _script(name: str) -> str:
    return (files("genbuffer") / "lua" / f"{name}.lua").read_text(encoding="utf-8")


def run_script(script: Any, keys_: list[str], args: list[Any], url: str) -> Any:
    """Run a registered Lua script; reload it when the server's cache was flushed.

    NOSCRIPT means the call did not run (a restart, a failover, SCRIPT FLUSH between
    load and call), so calling again is safe for every script. A server that keeps
    refusing is reported as unavailable.
    """
    for _ in range(SCRIPT_RELOADS):
        try:
            return script(keys=keys_, args=args)
        except redis.exceptions.NoScriptError:
            script.registered_client.script_load(script.script)
    raise RedisUnavailable(
        f"Redis at {mask_url(url)} keeps dropping genbuffer's Lua scripts (NOSCRIPT)",
        hint="is something running SCRIPT FLUSH in a loop, or is the server restarting?",
    )


def connect_redis(url: str, timeout: float = 5.0) -> redis.Redis:
    """Open a client for ``url``; ``memory://`` is an in-process fakeredis server.

    ``timeout`` bounds each attempt to connect or to get a reply, so a frozen server
    is reported (exit 3) within a few attempts of it, not after minutes.
    """
    if url.startswith(MEMORY_REDIS_URL):
        import fakeredis  # noqa: PLC0415  (only the embedded default needs it)

        server = _MEMORY_SERVERS.setdefault(url, fakeredis.FakeServer())
        client: redis.Redis = fakeredis.FakeRedis(server=server)
        return client
    try:
        return redis.Redis.from_url(
            url,
            socket_connect_timeout=timeout,
            socket_timeout=timeout,
            health_check_interval=30,
            retry=Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries=2),
        )
    except ValueError as exc:
        raise UsageError(f"invalid REDIS_URL {mask_url(url)}: {exc}") from None


@contextmanager
def redis_errors(url: str) -> Iterator[None]:
    """Turn connection-level redis-py errors into RedisUnavailable (exit 3)."""
    try:
        yield
    except redis.exceptions.ResponseError as exc:
        text = str(exc)
        if "DB index is out of range" in text:
            raise UsageError(
                f"Redis at {mask_url(url)} has no such database: {exc}",
                hint="check REDIS_DB (or the /N at the end of REDIS_URL)",
            ) from None
        if text.startswith(("OOM", "EXECABORT")) or "maxmemory" in text:
            raise OperationFailed(
                f"Redis at {mask_url(url)} refused a write: {text.splitlines()[0]}",
                hint="Redis is full: raise maxmemory, or compact and delete buffers; "
                "nothing that was refused was written",
            ) from None
        if text.startswith("READONLY"):
            raise RedisUnavailable(
                f"Redis at {mask_url(url)} is a read-only replica: {text.splitlines()[0]}",
                hint="point REDIS_URL at the primary (after a failover, the new one)",
            ) from None
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise RedisUnavailable(
            f"Redis is unreachable at {mask_url(url)}: {reason}",
            hint="check REDIS_URL (or REDIS_HOST/REDIS_PORT) and that the server is up",
        ) from None


@dataclass(frozen=True)
class PushResult:
    """What one push did: the list length after it, chunks appended and skipped."""

    key: str
    length: int
    appended: int
    skipped: int = 0
    bytes: int | None = None  # bytes appended, where the path counted them


@dataclass(frozen=True)
class BufferSnapshot:
    """A consistent view of a buffer taken at the start of a compaction."""

    key: str
    exists: bool
    length: int = 0
    meta: dict[str, str] = field(default_factory=dict)
    first_page: list[bytes] = field(default_factory=list)  # chunks from first_page_at on
    first_page_at: int = 0  # absolute position of first_page[0]
    # A read-only snapshot (dry run) does not record chunks vanished from the head in
    # the meta hash; they are counted here and added to positions instead.
    vanished: int = 0
    # The chunks the buffer holds where the row's last persisted ones should be
    # (snapshot.lua, ARGV[8]): one window for the row's stream, or one per supposed
    # `trimmed` of a lost meta hash; shorter than asked where the list lacks them.
    windows: list[list[bytes]] = field(default_factory=list)

    @property
    def seq_base(self) -> int | None:
        """The sequence number this buffer life began at (None: not a sequenced stream)."""
        value = self.meta.get("seq_base")
        return None if value is None else _int(value, 0)

    @property
    def stream_id(self) -> str | None:
        """The id of this life of the buffer (None for a meta hash without one)."""
        return self.meta.get("stream_id")

    @property
    def trimmed(self) -> int:
        """Chunks of this stream already acknowledged and removed from the list."""
        return _int(self.meta.get("trimmed"), 0) + self.vanished

    @property
    def orphaned(self) -> bool:
        """Whether compaction set this buffer aside because its row does not exist."""
        return "orphaned_at" in self.meta

    @property
    def end(self) -> int:
        """Absolute position just past the last chunk in the list."""
        return self.trimmed + self.length

    @property
    def counted(self) -> int | None:
        """Chunks the producer says it pushed (meta `chunk_count`), if it keeps a count."""
        value = self.meta.get("chunk_count")
        return None if value is None else _int(value, 0)

    @property
    def quarantined(self) -> bool:
        """Whether compaction set this buffer aside after too many failures."""
        return "quarantined_at" in self.meta

    @property
    def gaps(self) -> int:
        """Sequence numbers the producer skipped (chunks it never delivered)."""
        return _int(self.meta.get("gaps"), 0)

    @property
    def finished(self) -> bool:
        """Whether the producer marked the stream finished."""
        return "finished_at" in self.meta


_DISCOVERY_FIELDS = (
    "finished_at",
    "last_chunk_at",
    "quarantined_at",
    "orphaned_at",
    "chunk_count",
)


@dataclass(frozen=True)
class FoundBuffer:
    """A buffer found by a scan: its chunks key, ids, and what batch work decides on."""

    key: str
    organization_id: int
    scenario_id: int | None
    generation_id: int
    has_list: bool
    meta: dict[str, str]
    list_idle_seconds: int | None

    @property
    def state(self) -> str:
        """`quarantined`, `orphaned`, `finished`, or `open` (streaming or idle: ``idle_for``)."""
        if "quarantined_at" in self.meta:
            return "quarantined"
        if "orphaned_at" in self.meta:
            return "orphaned"
        if "finished_at" in self.meta:
            return "finished"
        return "open"

    def idle_for(self, now: datetime) -> timedelta | None:
        """How long no chunk arrived: `last_chunk_at` when the producer keeps it, else the
        list's idle time (OBJECT IDLETIME); None when neither is known."""
        stamp = _parse_time(self.meta.get("last_chunk_at"))
        if stamp is not None:
            return now - stamp
        if self.list_idle_seconds is not None:
            return timedelta(seconds=self.list_idle_seconds)
        return None


def _parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as written by producers (UTC when it has no zone)."""
    if not value:
        return None
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


@dataclass(frozen=True)
class KeyInfo:
    """One Redis key of a buffer, as `inspect-generation` shows it."""

    key: str
    type: str
    length: int
    ttl: int
    memory_bytes: int | None


def _batches(chunks: Iterable[bytes | str], size: int) -> Iterator[list[bytes | str]]:
    """Lists of up to ``size`` chunks, in order."""
    batch: list[bytes | str] = []
    for chunk in chunks:
        batch.append(chunk)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _sum_replies(replies: list[Any], appended: int, skipped: int) -> tuple[int, int, int]:
    """(last list length, appended, skipped) after a pipeline of push.lua replies."""
    length = 0
    for reply_length, reply_appended, reply_skipped in replies:
        length = int(reply_length)
        appended += int(reply_appended)
        skipped += int(reply_skipped)
    return length, appended, skipped


@lru_cache(maxsize=4096)
def _cached_keys(
    organization_id: int, generation_id: int, scenario_id: int | None, prefix: str
) -> tuple[str, str]:
    """(chunks key, meta key), built and validated once per generation."""
    chunks = keys.chunks_key(organization_id, generation_id, scenario_id, prefix)
    return chunks, keys.meta_key(chunks)


def _int(value: object, default: int) -> int:
    try:
        return int(str(value))
    except ValueError:
        return default


_SECOND: list[object] = [None, ""]  # (epoch second, its formatted prefix): one strftime a second


def _now_iso() -> str:
    """Now as ISO 8601 UTC with microseconds, e.g. 2026-11-25T21:15:53.028616Z."""
    second, fraction = divmod(time.time_ns(), 1_000_000_000)
    if _SECOND[0] != second:
        _SECOND[0], _SECOND[1] = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{_SECOND[1]}.{fraction // 1000:06d}Z"


def _average(chunks: list[bytes]) -> int:
    """Mean chunk size in bytes (0 for none)."""
    return sum(map(len, chunks)) // len(chunks) if chunks else 0


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class GenerationBuffer:
    """Generation buffers in one Redis database, under one key prefix."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        url: str = "",
        prefix: str = "",
        ttl: int = 86400,
        max_len: int | None = None,
        app_name: str | None = None,
    ) -> None:
        self.client = client
        self.app_name = app_name  # Laravel's APP_NAME: names the prefix rule in hints
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.max_len = max_len
        self._push = client.register_script(_script("push"))
        self._push_one = client.register_script(_script("push_one"))
        self._held = HeldConnection(client)
        self._expire_nx: bool | None = None
        self._snapshot = client.register_script(_script("snapshot"))
        self._ack = client.register_script(_script("ack"))
        self._fail = client.register_script(_script("fail"))
        self._observe = client.register_script(_script("observe"))

    @classmethod
    def from_settings(cls, settings: Settings) -> GenerationBuffer:
        """Connect to the configured Redis with the configured prefix, TTL and alert length."""
        url = settings.effective_redis_url()
        return cls(
            connect_redis(url, settings.redis_socket_timeout),
            url=url,
            prefix=settings.effective_redis_prefix(),
            ttl=settings.generation_chunk_ttl,
            max_len=settings.generation_chunk_max_len,
            app_name=settings.app_name,
        )

    def close(self) -> None:
        """Close the held producer connection and the client's pool."""
        self._held.close()
        self.client.close()

    # -- keys ------------------------------------------------------------------------

    def key_for(self, organization_id: int, generation_id: int, scenario_id: int | None) -> str:
        """The chunks key of a generation, prefix included."""
        return _cached_keys(organization_id, generation_id, scenario_id, self.prefix)[0]

    # -- producer --------------------------------------------------------------------

    def push_chunk(
        self,
        organization_id: int,
        generation_id: int,
        chunk: bytes | str,
        scenario_id: int | None = None,
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append one chunk and update the meta hash, in one atomic round trip.

        With ``seq`` (the chunk's 0-based position in the stream) a retried push
        is recognised and skipped instead of duplicating the chunk.
        """
        key, meta = _cached_keys(organization_id, generation_id, scenario_id, self.prefix)
        if seq is not None:
            return self.push_to_key(
                key, [chunk], (organization_id, scenario_id, generation_id), seq=seq
            )
        # The hot path of a streaming producer: cached keys, one EVALSHA of push_one.lua
        # on a held connection (see genbuffer.held).
        scenario = "" if scenario_id is None else scenario_id
        argv = (
            chunk,
            _now_iso(),
            chunk_bytes(chunk),
            self.ttl,
            organization_id,
            scenario,
            generation_id,
        )
        try:
            length = self._held.call("EVALSHA", self._push_one.sha, 2, key, meta, *argv)
        except (redis.exceptions.NoScriptError, HeldConnectionLost):
            # A restarted server or a dropped connection: redis-py's path loads the
            # script and retries with backoff.
            with redis_errors(self.url):
                length = run_script(self._push_one, [key, meta], list(argv), self.url)
        if self.max_len is not None and length > self.max_len:
            self._warn_length(key, int(length))
        return PushResult(key=key, length=int(length), appended=1, skipped=0)

    def push_many(
        self,
        organization_id: int,
        generation_id: int,
        chunks: Iterable[bytes | str],
        scenario_id: int | None = None,
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append chunks in order, a batch of them per atomic round trip."""
        key = self.key_for(organization_id, generation_id, scenario_id)
        ids = (organization_id, scenario_id, generation_id)
        return self.push_to_key(key, chunks, ids, seq=seq)

    def push_to_key(
        self,
        key: str,
        chunks: Iterable[bytes | str],
        ids: tuple[int, int | None, int],
        *,
        seq: int | None = None,
    ) -> PushResult:
        """Append chunks to an already built chunks key; ``ids`` are (org, scenario, generation).

        Each batch of PUSH_BATCH chunks is one atomic script call; PUSH_PIPELINE
        batches travel per round trip, in order.
        """
        org, scenario, generation = ids
        head = (self.ttl, _now_iso(), org, "" if scenario is None else scenario, generation)
        meta = keys.meta_key(key)
        length = appended = skipped = pushed_bytes = 0
        with redis_errors(self.url):
            if seq is None and self._has_expire_nx():
                length, appended, pushed = push_transactions(
                    self._held, key, chunks, head, url=self.url, batch_size=PUSH_BATCH
                )
                if appended == 0:
                    length = int(self.client.llen(key))
                if self.max_len is not None and length > self.max_len:
                    self._warn_length(key, length)
                return PushResult(key, length, appended, 0, pushed)
            group: list[tuple[object, ...]] = []
            for batch in _batches(chunks, PUSH_BATCH):
                total = total_bytes(batch)
                pushed_bytes += total
                group.append((*head, "" if seq is None else seq, total, *batch))
                seq = None if seq is None else seq + len(batch)
                if len(group) == PUSH_PIPELINE:
                    replies = self._run_scripts(key, meta, group)
                    length, appended, skipped = _sum_replies(replies, appended, skipped)
                    group = []
            if group:
                replies = self._run_scripts(key, meta, group)
                length, appended, skipped = _sum_replies(replies, appended, skipped)
            elif appended + skipped == 0:
                length = int(self.client.llen(key))
        if self.max_len is not None and length > self.max_len:
            self._warn_length(key, length)
        # skipped chunks' bytes were sent but not appended: then the count is unknown
        return PushResult(key, length, appended, skipped, None if skipped else pushed_bytes)

    def _run_scripts(self, key: str, meta: str, group: list[tuple[object, ...]]) -> list[Any]:
        """push.lua calls for ``group`` (argument tuples), in order, one round trip.

        A call refused with NOSCRIPT did not run: after a Redis restart (redis-py
        retries a pipeline on a new connection without loading its scripts) the
        refused calls are a suffix of the group, and are sent again, in order.
        """
        replies: list[Any] = []
        for _ in range(3):
            pipe = self.client.pipeline(transaction=False)
            for argv in group[len(replies) :]:
                self._push(keys=(key, meta), args=argv, client=pipe)  # type: ignore[arg-type]
            results = pipe.execute(raise_on_error=False)
            refused = [isinstance(r, redis.exceptions.NoScriptError) for r in results]
            ran = refused.index(True) if True in refused else len(results)
            if any(refused[ran:]) and not all(refused[ran:]):
                raise redis.exceptions.ResponseError(
                    f"push to {key}: the script cache was flushed mid-pipeline; stopped "
                    "rather than append batches out of order"
                )
            for result in results[:ran]:
                if isinstance(result, Exception):
                    raise result
            replies += results[:ran]
            if len(replies) == len(group):
                return replies
            self.client.script_load(self._push.script)
        raise redis.exceptions.NoScriptError(f"push to {key}: push.lua keeps being unloaded")

    def _has_expire_nx(self) -> bool:
        """Whether the server takes EXPIRE … NX (Redis 7+); asked once per buffer."""
        if self._expire_nx is None:
            probe = keys.meta_key(keys.smoke_chunks_key(uuid.uuid4().hex, self.prefix))
            try:  # on a key that does not exist: 0 on Redis 7+, an error before
                self.client.expire(probe, 1, nx=True)
                self._expire_nx = True
            except redis.exceptions.ResponseError:
                self._expire_nx = False
        return self._expire_nx

    def _warn_length(self, key: str, length: int) -> None:
        log.warning(
            "buffer %s holds %d chunks, over GENERATION_CHUNK_MAX_LEN=%s", key, length, self.max_len
        )

    def finish(
        self, organization_id: int, generation_id: int, scenario_id: int | None = None
    ) -> str:
        """Mark the stream finished (`finished_at` in the meta hash); returns the key."""
        key = self.key_for(organization_id, generation_id, scenario_id)
        with redis_errors(self.url):
            self.client.hset(keys.meta_key(key), "finished_at", _now_iso())
            if self.client.ttl(keys.meta_key(key)) == -1:
                self.client.expire(keys.meta_key(key), self.ttl)
        return key

    # -- compaction ------------------------------------------------------------------

    def snapshot(
        self,
        key: str,
        held: tuple[str, int] | None = None,
        page: int = READ_PAGE,
        *,
        read_only: bool = False,
        window: int = 0,
        shifts: tuple[int, ...] = (),
    ) -> BufferSnapshot:
        """Read length and meta atomically, give the stream an id, and lease its TTL.

        ``held`` is (stream id, chunks of it already persisted): the first page of
        chunks after those comes back in the same round trip. ``read_only`` (a dry
        run) writes nothing at all: no stream id, no lease, no correction stored.
        ``window``: how many chunks before the held position to return as well, for
        the held stream, or else at each of ``shifts`` (supposed `trimmed` values).
        """
        stream, offset = held if held is not None else ("", 0)
        args = [uuid.uuid4().hex, LEASE_SECONDS, self.ttl, stream, offset, page]
        with redis_errors(self.url):
            reply = run_script(
                self._snapshot,
                [key, keys.meta_key(key)],
                [*args, "1" if read_only else "0", window, *shifts],
                self.url,
            )
        if int(reply[0]) == 0:
            return BufferSnapshot(key=key, exists=False)
        flat = [_text(item) for item in reply[2]]
        meta = dict(zip(flat[::2], flat[1::2], strict=True))
        return BufferSnapshot(
            key=key,
            exists=True,
            length=int(reply[1]),
            meta=meta,
            first_page=list(reply[3]),
            first_page_at=int(reply[4]),
            vanished=int(reply[5]),
            windows=[list(found) for found in reply[6]],
        )

    def read(
        self, snapshot: BufferSnapshot, start: int, end: int, page: int = READ_PAGE
    ) -> Iterator[list[bytes]]:
        """Yield pages of the chunks at absolute positions ``start`` to ``end`` (exclusive).

        When ``start`` is where the snapshot's first page begins, that page is used
        rather than read again; any other start reads from Redis.
        """
        stream = snapshot.stream_id or ""
        position = start
        if snapshot.first_page and start == snapshot.first_page_at and start < end:
            first = snapshot.first_page[: end - start]
            yield first
            position += len(first)
        trimmed = snapshot.trimmed
        weight = _average(snapshot.first_page)
        with redis_errors(self.url):
            while position < end:
                # pages of about PAGE_BYTES: a byte cap is overshot by one page at most
                count = page if weight == 0 else max(1, min(page, PAGE_BYTES // weight))
                last = min(position + count, end) - 1
                chunks, trimmed = self._read_page(
                    snapshot.key,
                    stream,
                    (position, last),
                    trimmed=trimmed,
                    vanished=snapshot.vanished,
                )
                if len(chunks) != last - position + 1:
                    raise StreamChanged(
                        f"buffer {snapshot.key} lost chunks while it was read "
                        f"(expected {last - position + 1}, got {len(chunks)})",
                        hint="nothing was written; run the command again",
                    )
                yield chunks
                weight = _average(chunks) or weight
                position = last + 1

    def _read_page(
        self, key: str, stream: str, span: tuple[int, int], *, trimmed: int, vanished: int = 0
    ) -> tuple[list[bytes], int]:
        """Chunks at absolute positions ``span`` (first, last), and the `trimmed` they assume.

        A native LRANGE inside MULTI/EXEC with the meta fields its indexes depend on
        (a Lua script converting every chunk to a Lua string and back cost twice
        as much); when a concurrent acknowledgement moved `trimmed`, read again.
        """
        first, last = span
        meta = keys.meta_key(key)
        for _ in range(16):
            pipe = self.client.pipeline(transaction=True)
            pipe.hmget(meta, ["stream_id", "trimmed"])
            pipe.lrange(key, first - trimmed, last - trimmed)
            (seen_stream, seen_trimmed), chunks = pipe.execute()
            if ("" if seen_stream is None else _text(seen_stream)) != stream:
                raise StreamChanged(
                    f"buffer {key} was replaced while it was read",
                    hint="nothing was written; run the command again",
                )
            now = int(seen_trimmed or 0) + vanished
            if now == trimmed:
                return list(chunks), trimmed
            if first < now:  # acknowledged past what this read still needs
                break
            trimmed = now
        raise StreamChanged(
            f"buffer {key} was trimmed while it was read",
            hint="nothing was written; run the command again",
        )

    def acknowledge(
        self, key: str, stream_id: str, persisted: int, delete: bool
    ) -> tuple[int, bool, int]:
        """Trim chunks below ``persisted`` (committed); with ``delete`` drop emptied keys.

        Returns (chunks trimmed, keys deleted, chunks left).
        """
        with redis_errors(self.url):
            trimmed, deleted, left = run_script(
                self._ack,
                [key, keys.meta_key(key)],
                [stream_id, persisted, 1 if delete else 0],
                self.url,
            )
        return int(trimmed), bool(int(deleted)), int(left)

    def acknowledge_many(self, acks: list[tuple[str, str, int]], delete: bool) -> int:
        """Acknowledge several committed compactions (key, stream id, persisted) in one trip.

        Returns how many buffers were deleted.
        """
        if not acks:
            return 0
        with redis_errors(self.url):
            for _ in range(SCRIPT_RELOADS):
                pipe = self.client.pipeline(transaction=False)
                for key, stream_id, persisted in acks:
                    self._ack(
                        keys=[key, keys.meta_key(key)],
                        args=[stream_id, persisted, 1 if delete else 0],
                        client=pipe,
                    )
                try:
                    return sum(int(reply[1]) for reply in pipe.execute())
                except redis.exceptions.NoScriptError:
                    # acknowledgements are idempotent: the whole pipeline is sent again
                    self.client.script_load(self._ack.script)
        raise RedisUnavailable(
            f"Redis at {mask_url(self.url)} keeps dropping genbuffer's Lua scripts (NOSCRIPT)"
        )

    def record_failure(self, key: str, error: str, max_attempts: int) -> tuple[int, bool]:
        """Count a failed compaction of ``key``; returns (attempts, quarantined).

        Both keys get a TTL if they have none, so a buffer set aside still expires.
        """
        return self._set_aside(key, error, max_attempts, "quarantined_at")

    def mark_orphaned(self, key: str, error: str) -> bool:
        """Set aside a buffer whose row does not exist; True the first time (report it once)."""
        attempts, _ = self._set_aside(key, error, 1, "orphaned_at")
        return attempts == 1

    def _set_aside(self, key: str, error: str, limit: int, field_name: str) -> tuple[int, bool]:
        line = " ".join(error.split())[:500]
        with redis_errors(self.url):
            attempts, aside = run_script(
                self._fail,
                [keys.meta_key(key), key],
                [line, limit, _now_iso(), self.ttl, field_name],
                self.url,
            )
        return int(attempts), bool(int(aside))

    def clear_failures(self, key: str) -> None:
        """Forget failed attempts (and a quarantine or orphan mark) after a compaction."""
        with redis_errors(self.url):
            self.client.hdel(
                keys.meta_key(key), "attempts", "last_error", "quarantined_at", "orphaned_at"
            )

    # -- inspection ------------------------------------------------------------------

    def discover(self, page: int = 1000) -> Iterator[FoundBuffer]:
        """Every generation buffer under the prefix, each once: lists with or without a
        meta hash, and meta hashes whose list is gone.

        Read-only and bounded in memory: a SCAN page at a time, one pipelined round
        trip per page (EXISTS and OBJECT IDLETIME do not reset a key's idle time).
        """
        pattern = keys.all_buffers_scan_pattern(self.prefix)
        with redis_errors(self.url):
            names: list[str] = []
            for raw in self.client.scan_iter(match=pattern, count=page):
                names.append(_text(raw))
                if len(names) == page:
                    yield from self._describe_page(names)
                    names = []
            if names:
                yield from self._describe_page(names)

    def _describe_page(self, names: list[str]) -> Iterator[FoundBuffer]:
        found: list[tuple[keys.KeyParts, str]] = []
        for name in names:
            parts = keys.parse_chunks_key(name, self.prefix)
            if parts is not None:
                found.append((parts, keys.chunks_key_of(name)))
        pipe = self.client.pipeline(transaction=False)
        for _, chunks in found:
            pipe.exists(chunks)
            pipe.hmget(keys.meta_key(chunks), _DISCOVERY_FIELDS)
            pipe.object("idletime", chunks)
        replies = pipe.execute(raise_on_error=False)
        for index, (parts, chunks) in enumerate(found):
            has_list, values, idle = replies[3 * index : 3 * index + 3]
            if isinstance(has_list, Exception) or isinstance(values, Exception):
                raise has_list if isinstance(has_list, Exception) else values
            if parts.is_meta and int(has_list):
                continue  # the list is there too: reported once, from the list
            meta = {f: _text(v) for f, v in zip(_DISCOVERY_FIELDS, values, strict=True) if v}
            yield FoundBuffer(
                key=chunks,
                organization_id=parts.organization_id,
                scenario_id=parts.scenario_id,
                generation_id=parts.generation_id,
                has_list=bool(int(has_list)),
                meta=meta,
                # None: unknown (the in-process Redis, or an LFU eviction policy)
                list_idle_seconds=None
                if isinstance(idle, Exception) or idle is None
                else int(idle),
            )

    def has_buffers(self, page: int = 1000) -> bool:
        """Whether any buffer key lives under the configured prefix (stops at the first)."""
        pattern = keys.all_buffers_scan_pattern(self.prefix)
        with redis_errors(self.url):
            for raw in self.client.scan_iter(match=pattern, count=page):
                if keys.parse_chunks_key(_text(raw), self.prefix) is not None:
                    return True
        return False

    def other_prefixes(self, page: int = 1000, sample: int = 10_000) -> dict[str, int]:
        """Buffer keys under prefixes other than the configured one, counted by prefix.

        A SCAN of the whole keyspace (no KEYS), stopped after ``sample`` matching keys.
        """
        counts: dict[str, int] = {}
        seen = 0
        with redis_errors(self.url):
            for raw in self.client.scan_iter(match=keys.any_prefix_scan_pattern(), count=page):
                found = keys.prefix_of(_text(raw))
                if found is not None and found != self.prefix:
                    counts[found] = counts.get(found, 0) + 1
                seen += 1
                if seen >= sample:
                    break
        return counts

    def durability(self) -> dict[str, str] | None:
        """The server's eviction policy and persistence (`maxmemory-policy`, `save`,
        `aof_enabled`); None where CONFIG or INFO is refused (managed servers, the
        in-process Redis)."""
        with redis_errors(self.url):
            try:
                config = self.client.config_get("maxmemory-policy")
                config.update(self.client.config_get("save"))
                persistence = self.client.info("persistence")
            except redis.exceptions.ResponseError:
                return None
        return {
            "maxmemory-policy": str(config.get("maxmemory-policy", "")),
            "save": str(config.get("save", "")),
            "aof_enabled": str(persistence.get("aof_enabled", "0")),
        }

    def observe(self, key: str) -> datetime | None:
        """When the list last changed as genbuf saw it (observe.lua); None if it is gone."""
        with redis_errors(self.url):
            seen = run_script(
                self._observe, [key, keys.meta_key(key)], [_now_iso(), self.ttl], self.url
            )
        return _parse_time(_text(seen)) if seen else None

    def generation_keys(
        self, organization_id: int, generation_id: int, scenario_id: int | None = None
    ) -> list[str]:
        """Every existing buffer key of a generation; SCANs scenarios when none is given."""
        candidates: list[str] = []
        with redis_errors(self.url):
            if scenario_id is not None:
                chunks = self.key_for(organization_id, generation_id, scenario_id)
                candidates = [chunks, keys.meta_key(chunks)]
            else:
                chunks = self.key_for(organization_id, generation_id, None)
                candidates = [chunks, keys.meta_key(chunks)]
                pattern = keys.scenario_scan_pattern(organization_id, generation_id, self.prefix)
                for raw in self.client.scan_iter(match=pattern, count=1000):
                    found = _text(raw)
                    parts = keys.parse_chunks_key(found, self.prefix)
                    if parts and parts.generation_id == generation_id:
                        candidates.append(found)  # as SCAN returned it: never prefixed again
            pipe = self.client.pipeline(transaction=False)
            for key in candidates:
                pipe.exists(key)
            present = pipe.execute()
        return sorted({key for key, there in zip(candidates, present, strict=True) if there})

    def describe(self, key_names: list[str]) -> list[KeyInfo]:
        """Type, length, TTL and memory of each key."""
        infos: list[KeyInfo] = []
        with redis_errors(self.url):
            for key in key_names:
                kind = _text(self.client.type(key))
                length = {"list": self.client.llen, "hash": self.client.hlen}.get(kind)
                try:
                    memory = self.client.memory_usage(key)
                except redis.exceptions.ResponseError:
                    memory = None  # MEMORY USAGE disabled or unsupported
                infos.append(
                    KeyInfo(
                        key=key,
                        type=kind,
                        length=int(length(key)) if length else 0,
                        ttl=int(self.client.ttl(key)),
                        memory_bytes=None if memory is None else int(memory),
                    )
                )
        return infos

    def delete(self, key_names: list[str]) -> int:
        """Delete the given keys as they are; returns how many existed."""
        if not key_names:
            return 0
        with redis_errors(self.url):
            return int(self.client.delete(*key_names))

    def list_length(self, key: str) -> int:
        """LLEN of a chunks list (0 when it does not exist)."""
        with redis_errors(self.url):
            return int(self.client.llen(key))

    def ttl_of(self, key: str) -> int:
        """TTL of a key in seconds (-1 no expiry, -2 no such key)."""
        with redis_errors(self.url):
            return int(self.client.ttl(key))

    def existing_keys(self, names: list[str]) -> list[str]:
        """Those of ``names`` that exist, in one round trip."""
        with redis_errors(self.url):
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.exists(name)
            return [name for name, there in zip(names, pipe.execute(), strict=True) if there]

    def exists(self, key: str) -> bool:
        """Whether the key exists."""
        with redis_errors(self.url):
            return bool(self.client.exists(key))

    def ping(self) -> None:
        """Raise RedisUnavailable unless the server answers."""
        with redis_errors(self.url):
            self.client.ping()
