"""Unsequenced pushes as MULTI/EXEC transactions, pipelined on the held connection.

Each transaction appends up to TRANSACTION_BATCHES variadic RPUSHes (at most
TRANSACTION_BYTES) and updates the meta hash, atomically; `EXPIRE … NX` sets the
TTL only on a key that has none, i.e. when this push created it (Redis 7+).
While Redis executes one transaction the next is packed, so the client's packing
and the server's work overlap.

A dropped connection is not retried: a transaction sent but unconfirmed may have
been applied, and sending it again would duplicate chunks. The error,
``PushOutcomeUnknown``, says how many chunks were confirmed and how many are in
doubt (sequenced pushes are the exactly-once path).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from itertools import chain, islice
from typing import Any

import redis

from genbuffer import keys
from genbuffer.errors import OperationFailed, PushOutcomeUnknown, RedisUnavailable
from genbuffer.redis import meta as m
from genbuffer.redis.held import HeldConnection, HeldConnectionLost, HeldSession, pack
from genbuffer.settings import mask_url

__all__ = [
    "TRANSACTION_BATCHES",
    "TRANSACTION_BYTES",
    "chunk_bytes",
    "outcome_unknown",
    "push_transactions",
    "total_bytes",
]

TRANSACTION_BATCHES = 50  # variadic RPUSHes per MULTI/EXEC …
TRANSACTION_BYTES = 16 * 1024 * 1024  # … or fewer, past this many bytes
_META_COMMANDS = 7  # after the RPUSHes: HINCRBY x2, HSET, HSETNX x2, EXPIRE x2


def chunk_bytes(chunk: bytes | str) -> int:
    """Length in bytes, as Redis stores it (str chunks are sent as UTF-8)."""
    return len(chunk) if isinstance(chunk, bytes) else len(chunk.encode())


def total_bytes(batch: list[bytes | str]) -> int:
    """Bytes in a batch; one C-level join for the usual all-bytes batch."""
    try:
        return len(b"".join(batch))  # type: ignore[arg-type]
    except TypeError:  # str chunks among them: counted as UTF-8
        return sum(map(chunk_bytes, batch))


class _Transaction:
    """One MULTI/EXEC, packed: its commands, chunk count and bytes."""

    def __init__(self, commands: list[tuple[Any, ...]], count: int, total: int, first: int) -> None:
        self.packed = pack(commands)
        self.first = first  # chunks in the first RPUSH: its reply equal to it, a new list
        self.replies = len(commands)
        self.pushes = len(commands) - 2 - _META_COMMANDS
        self.count = count
        self.total = total


def _transactions(
    key: str, meta: str, chunks: Iterable[bytes | str], head: tuple[Any, ...], batch_size: int
) -> Iterator[_Transaction]:
    ttl, now, org, scenario, generation = head
    stream_id = "t" + uuid.uuid4().hex
    fields: tuple[Any, ...] = (m.LAST_CHUNK_AT, now, m.ORGANIZATION_ID, org, m.GENERATION_ID)
    fields += (generation,) + (() if scenario == "" else (m.SCENARIO_ID, scenario))
    source = iter(chunks)
    while True:
        commands: list[tuple[Any, ...]] = [("MULTI",)]
        count = total = 0
        for _ in range(TRANSACTION_BATCHES):
            batch = list(islice(source, batch_size))
            if not batch:
                break
            commands.append(("RPUSH", key, *batch))
            count += len(batch)
            total += total_bytes(batch)
            if total >= TRANSACTION_BYTES:
                break
        if count == 0:
            return
        commands += [
            ("HINCRBY", meta, m.CHUNK_COUNT, count),
            ("HINCRBY", meta, m.BYTES, total),
            ("HSET", meta, *fields),
            ("HSETNX", meta, m.FIRST_CHUNK_AT, now),
            ("HSETNX", meta, m.STREAM_ID, stream_id),  # a life has its id from the start
            ("EXPIRE", key, ttl, "NX"),
            ("EXPIRE", meta, ttl, "NX"),
            ("EXEC",),
        ]
        yield _Transaction(commands, count, total, len(commands[1]) - 2)


def _settle(session: HeldSession, sent: _Transaction, key: str, raise_meta: tuple[Any, ...]) -> int:
    """Read one transaction's replies; the list length after it.

    ``raise_meta`` is the EXPIRE … GT sent when the transaction created the list.
    """
    replies = session.read(sent.replies)
    executed = replies[-1]
    if isinstance(executed, Exception):  # EXECABORT (e.g. OOM while queueing): none applied
        raise executed
    failed = [reply for reply in executed if isinstance(reply, Exception)]
    if failed:
        raise redis.exceptions.ResponseError(f"push to {key}: {failed[0]}")
    if int(executed[0]) == sent.first:
        session.send(pack([raise_meta]))
        (raised,) = session.read(1)
        if isinstance(raised, Exception):
            raise raised
    return int(executed[sent.pushes - 1])


def outcome_unknown(url: str, key: str, *, confirmed: int, in_doubt: int) -> PushOutcomeUnknown:
    """The error of a push whose connection failed after it was sent (every push path's)."""
    doubt = (
        f"up to {in_doubt} more may have been appended"
        if in_doubt
        else "all were appended, but the meta hash may not count the last of them"
    )
    return PushOutcomeUnknown(
        f"Redis connection at {mask_url(url)} failed during a push to {key}: {confirmed} "
        f"chunks confirmed, {doubt}",
        confirmed=confirmed,
        in_doubt=in_doubt,
        hint="the chunks in doubt may be in the buffer: pushing them again without sequence "
        "numbers may append them twice; push with seq= (sequence numbers skip what already "
        "arrived), or check the buffer (inspect-generation) before pushing the rest",
    )


def push_transactions(
    held: HeldConnection,
    key: str,
    chunks: Iterable[bytes | str],
    head: tuple[Any, ...],
    *,
    url: str,
    batch_size: int,
) -> tuple[int, int, int]:
    """Append ``chunks`` to the list ``key``, in order, and update its meta hash.

    ``head`` is (ttl, now, org, scenario or '', generation); ``url`` names the
    server in errors; ``batch_size`` chunks go per RPUSH.

    Returns (list length after the last transaction or 0, chunks appended, bytes).
    """
    meta = keys.meta_key(key)
    raise_meta = ("EXPIRE", meta, head[0], "GT")
    length = appended = pushed_bytes = 0
    in_flight: _Transaction | None = None  # sent, not yet confirmed
    try:
        with held.session() as session:
            # The generator packs the next transaction while Redis runs the one in flight;
            # the final None only settles the last one.
            batches = _transactions(key, meta, chunks, head, batch_size)
            for transaction in chain(batches, [None]):
                if in_flight is not None:
                    length = _settle(session, in_flight, key, raise_meta)
                    appended += in_flight.count
                    pushed_bytes += in_flight.total
                in_flight = transaction
                if transaction is not None:
                    session.send(transaction.packed)
    except redis.exceptions.ResponseError as exc:
        if not isinstance(exc, redis.exceptions.ExecAbortError) and not str(exc).startswith("OOM"):
            raise  # a command that failed inside EXEC: the others did apply
        # EXECABORT (a command refused while queueing, e.g. OOM): none of it was applied
        raise OperationFailed(
            f"Redis at {mask_url(url)} refused a push to {key}: {str(exc).splitlines()[0]}; "
            f"{appended} chunks confirmed, the refused ones were not appended",
            hint="Redis is full (maxmemory): free memory or raise it, then push the rest",
        ) from None
    except HeldConnectionLost as lost:
        if in_flight is None or not lost.sent:  # nothing unconfirmed was sent
            raise RedisUnavailable(
                f"Redis is unreachable at {mask_url(url)}: the connection failed before a "
                f"push to {key} was sent; {appended} chunks confirmed, none in doubt",
                hint="check REDIS_URL and that the server is up, then push the rest",
            ) from None
        raise outcome_unknown(url, key, confirmed=appended, in_doubt=in_flight.count) from None
    return length, appended, pushed_bytes
