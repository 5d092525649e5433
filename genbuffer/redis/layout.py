"""Where a buffer's keys live, as one strategy chosen once per key: ``layout_of``.

Two layouts, one interface (``Layout``): where genbuf keeps its own fields, which
hashes a reader merges, how a push writes, how a snapshot is taken and what follows
a deleting acknowledgement. Every module of ``genbuffer.redis`` asks ``layout_of``
and calls the strategy; none branches on the layout itself.

- ``OneSlot``: one server, or the hash-tagged template on a Redis Cluster. The list
  and its meta hash share a slot; genbuf's fields live in the meta hash, and a push
  is one call of push.lua.
- ``Split``: the app's untagged keys on a Redis Cluster. A Lua script may touch the
  keys of one slot only, and the app keeps writing ``K`` and ``K:meta`` as named (no
  hash tag). So the fields genbuf owns (stream id, ``trimmed``, failures) live in
  ``{K}:genbuf`` beside the list (same slot, one script for both), and the
  producer's fields stay in ``K:meta``, read on their own. Why that keeps invariant
  1 (no chunk lost, none twice):

  - Every producer appends to the list before it counts in the meta hash (the app's
    ``RPUSH`` then ``HINCRBY``; genbuf's push.lua, step ``list`` then step ``count``).
    Compaction reads the meta hash *before* the script that snapshots the list, so
    the counter it sees never exceeds what the list holds plus what was trimmed: a
    chunk is never taken for vanished because its count arrived first, and chunks
    that did vanish (expired, lost in a failover) still show as a counter ahead of
    the list (``chunk_count_mismatch``, never silent).
  - Positions, the stream id and acknowledgements live beside the list and change in
    one script with it, exactly as in the one-slot layout: what is trimmed is what a
    committed transaction holds.
  - A deleted buffer (``--delete``) loses its list in one script with the positions,
    and ``{K}:genbuf`` is kept, marked ``ended``; the meta hash then gives up the
    deleted life's count (``release_meta.lua``, once per life: a producer that began
    the next life meanwhile keeps what it counted), and only then is ``{K}:genbuf``
    dropped (``drop_state.lua``). A snapshot that meets ``ended`` (a deleter killed
    between the steps) finishes the delete first. A counter read before a snapshot
    that finds neither list nor ``{K}:genbuf`` may belong to a life deleted in
    between: the meta hash is read again (the release comes before the drop, so it
    shows by then) and the chunks count as vanished only if the counter still says so.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from itertools import chain, islice
from typing import Any, ClassVar, NamedTuple

import redis

from genbuffer import keys
from genbuffer.errors import (
    GenbufferError,
    OperationFailed,
    PushOutcomeUnknown,
    RedisUnavailable,
    StreamChanged,
    UsageError,
)
from genbuffer.lua.ack import Layout as AckLayout
from genbuffer.lua.drop_state import DropStateArgs
from genbuffer.lua.push import PushArgs, PushHead, PushReply
from genbuffer.lua.release_meta import REMEMBER_AFTER_DROP, ReleaseMetaArgs
from genbuffer.lua.snapshot import (
    Counter,
    MetaHash,
    Mode,
    SnapshotArgs,
    SnapshotReply,
    SnapshotTag,
    SplitTry,
)
from genbuffer.redis import meta as fields
from genbuffer.redis.connection import (
    NotWritten,
    RedisTarget,
    SentUnconfirmed,
    another_type,
    redis_errors,
    text,
    wrong_type,
)
from genbuffer.redis.direct import (
    Command,
    Keyed,
    on_key_node,
    pipeline_on_nodes,
    raise_first,
    send_on_one_key,
)
from genbuffer.redis.scripts import RefusedAfter, ScriptRunner
from genbuffer.settings import mask_url

__all__ = [
    "PUSH_BATCH",
    "PUSH_PIPELINE",
    "TRANSACTION_BATCHES",
    "DeletedLife",
    "Layout",
    "OneSlot",
    "Pushed",
    "Split",
    "chunk_bytes",
    "layout_of",
    "outcome_unknown",
    "push_failed",
]

MetaRead = tuple[dict[str, str], bool]  # a meta hash read apart (its fields), and whether it exists

PUSH_BATCH = 1000  # chunks per push.lua call: far below Lua's unpack() limit of ~8000 values
PUSH_PIPELINE = 16  # calls sent per round trip where a pipeline may carry scripts
TRANSACTION_BATCHES = 16  # RPUSHes of PUSH_BATCH chunks per MULTI/EXEC (the fast path) …
TRANSACTION_BYTES = 16 * 1024 * 1024  # … or fewer, past this many bytes
SPLIT_TRIES = 5  # snapshots of a split list that met a delete under way, before giving up
# the least proto-max-bulk-len Redis takes: no chunk this long or shorter is over the limit
LEAST_BULK_LIMIT = 1024 * 1024


class DeletedLife(NamedTuple):
    """A life of a buffer ack.lua deleted: its list, its chunks, its stream id, and (a
    split list's) the TTL of genbuf's hash it marked `ended` (-2: none)."""

    key: str
    life: int
    stream: str
    ended_ttl: int = -2


class Pushed(NamedTuple):
    """What a push did: the list length after it, chunks appended and skipped, bytes sent."""

    length: int
    appended: int
    skipped: int
    bytes: int


def chunk_bytes(chunk: bytes | str) -> int:
    """Length in bytes, as Redis stores it (str chunks are sent as UTF-8)."""
    return len(chunk) if isinstance(chunk, bytes) else len(chunk.encode())


def _total_bytes(batch: tuple[bytes | str, ...]) -> int:
    """Bytes in a batch; one C-level join for the usual all-bytes batch."""
    try:
        return len(b"".join(batch))  # type: ignore[arg-type]
    except TypeError:  # str chunks among them: counted as UTF-8
        return sum(map(chunk_bytes, batch))


def _batches(chunks: Iterable[bytes | str]) -> Iterator[tuple[bytes | str, ...]]:
    """Tuples of up to PUSH_BATCH chunks, in order."""
    source = iter(chunks)
    while batch := tuple(islice(source, PUSH_BATCH)):
        yield batch


def _transactions(
    chunks: Iterable[bytes | str],
) -> Iterator[tuple[list[tuple[bytes | str, ...]], int]]:
    """Groups of batches for one MULTI/EXEC each (TRANSACTION_BATCHES of them, or fewer
    once they hold TRANSACTION_BYTES), with their size in bytes."""
    group: list[tuple[bytes | str, ...]] = []
    size = 0
    for batch in _batches(chunks):
        group.append(batch)
        size += _total_bytes(batch)
        if len(group) == TRANSACTION_BATCHES or size >= TRANSACTION_BYTES:
            yield group, size
            group, size = [], 0
    if group:
        yield group, size


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


def _largest(chunks: Iterable[bytes | str]) -> int:
    """The longest chunk's length in bytes (0 for none)."""
    return max(map(chunk_bytes, chunks), default=0)


def _bulk_limit_passed(target: RedisTarget, key: str, largest: int) -> int | None:
    """The server's proto-max-bulk-len when a chunk of ``largest`` bytes is over it, so
    that Redis refused the command carrying it before running it (it closes the
    connection on it: a write that fails, or its "invalid bulk length" reply). None
    when the chunk is within it, or when the server does not say (CONFIG refused, as
    managed services do; unreachable). Asked only after a push failed."""
    if largest <= LEAST_BULK_LIMIT:
        return None
    client: Any = target.client  # (a RedisCluster: CONFIG GET goes to the key's node)
    node = {"target_nodes": client.get_node_from_key(key)} if target.cluster else {}
    try:
        said = client.config_get("proto-max-bulk-len", **node)
        limit = int(said.get("proto-max-bulk-len") or "")
    except (redis.exceptions.RedisError, AttributeError, TypeError, ValueError):
        return None
    return limit if largest > limit else None


def _refused_over_limit(url: str, key: str, largest: int, limit: int) -> OperationFailed:
    """The error of a push Redis refused for a chunk over its proto-max-bulk-len."""
    return OperationFailed(
        f"Redis at {mask_url(url)} refused a push to {key}: a chunk of {largest} bytes is "
        f"over its proto-max-bulk-len ({limit} bytes): the call carrying it did not run",
        hint="split the chunk into smaller ones, or raise proto-max-bulk-len: pushing it "
        "again fails the same way",
    )


def push_failed(
    target: RedisTarget,
    key: str,
    exc: SentUnconfirmed,
    chunks: Sequence[bytes | str],
    confirmed: int,
) -> GenbufferError:
    """The error of a push sent once whose connection failed (``chunks``: what the
    failed call carried; ``confirmed``: chunks of the push appended before it), as
    certain as the failure allows:

    - a chunk over the server's proto-max-bulk-len (asked after the fact): Redis
      refuses any command with such an argument before running it, and closes the
      connection (OperationFailed, exit 1: pushing it again fails the same way);
    - a failure while the call was being written (NotWritten): Redis never received it
      whole, so none of it was appended (RedisUnavailable, exit 3: a retry is safe);
    - otherwise it may have run (PushOutcomeUnknown)."""
    url = target.url
    largest = _largest(chunks)
    limit = None if "Timeout" in str(exc) else _bulk_limit_passed(target, key, largest)
    if limit is not None:
        return _refused_over_limit(url, key, largest, limit)
    if isinstance(exc, NotWritten):
        return RedisUnavailable(
            f"Redis connection at {mask_url(url)} failed while a push to {key} was being "
            f"written ({exc}): Redis never received it whole, so none of it was appended; "
            f"{confirmed} chunks of the push confirmed before it",
            hint="push the chunks not confirmed again once Redis answers (none of them is "
            "in the buffer), and check REDIS_URL and that the server is up",
        )
    return outcome_unknown(url, key, confirmed=confirmed, in_doubt=len(chunks))


class Layout(ABC):
    """Where a buffer's keys live and what that asks of each step (see the module)."""

    sequenced: ClassVar[bool]  # whether pushes may carry sequence numbers
    ack: ClassVar[AckLayout]  # what ack.lua keeps when it deletes a life

    @abstractmethod
    def state_key(self, chunks: str) -> str:
        """The hash of genbuf's fields of a list (stream id, trimmed, failures)."""

    @abstractmethod
    def hashes(self, chunks: str) -> tuple[str, ...]:
        """Every hash holding the buffer's fields, genbuf's own last (its fields win)."""

    @abstractmethod
    def push(
        self,
        scripts: ScriptRunner,
        key: str,
        chunks: Iterable[bytes | str],
        head: PushHead,
        seq: int | None,
    ) -> Pushed:
        """Append ``chunks`` to the list ``key`` in order and count them (push.lua)."""

    @abstractmethod
    def finish(
        self, scripts: ScriptRunner, key: str, head: PushHead, then: Sequence[Command] = ()
    ) -> None:
        """Mark the stream of the list ``key`` finished (push.lua, step finish), and then
        send ``then``, commands on one key (the announcement: it must follow the mark)."""

    @abstractmethod
    def snapshot(
        self, scripts: ScriptRunner, call: SnapshotArgs, lease: int, known: MetaRead | None = None
    ) -> tuple[dict[str, str], SnapshotReply]:
        """snapshot.lua's reply, and the producer's fields read apart from it (if any);
        ``lease``: how long a meta hash read apart must live at least; ``known``: that
        meta hash as ``read_metas`` read it before (a batch's), used for the first try."""

    def read_metas(
        self, scripts: ScriptRunner, chunks: Sequence[str], lease: int
    ) -> dict[str, MetaRead]:
        """The meta hashes snapshots of ``chunks`` read apart, each as it stands and
        whether it exists, read in one round trip to each node (none here)."""
        return {}

    @abstractmethod
    def after_delete(self, scripts: ScriptRunner, deleted: DeletedLife) -> None:
        """What follows ack.lua deleting a life of a buffer."""

    def after_deletes(self, scripts: ScriptRunner, deleted: list[DeletedLife]) -> None:
        """``after_delete`` of several deletions."""
        for one in deleted:
            self.after_delete(scripts, one)


def _pairs(reply: Any) -> Iterable[tuple[Any, Any]]:
    """HGETALL's reply sent as a plain command: a dict (RESP3, or parsed by redis-py's
    callback) or a flat list of field, value."""
    if isinstance(reply, dict):
        return reply.items()
    return zip(reply[::2], reply[1::2], strict=True)


def _sum(reply: PushReply, appended: int, skipped: int) -> tuple[int, int, int]:
    """(list length, appended, skipped) after ``reply``, counting from those before."""
    return reply.length, appended + reply.appended, skipped + reply.skipped


class OneSlot(Layout):
    """The list and its meta hash in one slot: genbuf's fields in the meta hash."""

    sequenced = True
    ack = AckLayout.ONE_SLOT

    def state_key(self, chunks: str) -> str:
        """The meta hash."""
        return keys.meta_key(chunks)

    def hashes(self, chunks: str) -> tuple[str, ...]:
        """The meta hash alone."""
        return (keys.meta_key(chunks),)

    def push(
        self,
        scripts: ScriptRunner,
        key: str,
        chunks: Iterable[bytes | str],
        head: PushHead,
        seq: int | None,
    ) -> Pushed:
        """A single chunk: one push.lua call (step push). Unsequenced batches on one
        server: the fast path, TRANSACTION_BATCHES native RPUSHes of PUSH_BATCH chunks
        and push.lua counting them (step rpushed) per MULTI/EXEC. Otherwise one push.lua
        call per PUSH_BATCH chunks; PUSH_PIPELINE of them per round trip on one server,
        one at a time on a cluster (redis-py refuses scripts in a cluster pipeline)."""
        meta = keys.meta_key(key)
        if type(chunks) is tuple and len(chunks) == 1:  # push_chunk, once per token
            size = chunk_bytes(chunks[0])
            call = PushArgs.push(key, meta, head, chunks, size, seq=seq)
            if seq is not None:
                return Pushed(*self._send(scripts, [call]), size)
            try:
                with redis_errors(scripts.target.url):
                    return Pushed(*scripts.run_once(call), size)
            except SentUnconfirmed as exc:
                raise push_failed(scripts.target, key, exc, chunks, 0) from None
        if seq is None and not scripts.target.cluster:
            return self._push_transactions(scripts, key, chunks, head)
        length = appended = skipped = sent = 0
        group: list[PushArgs] = []
        for batch in _batches(chunks):
            size = _total_bytes(batch)
            group.append(PushArgs.push(key, meta, head, batch, size, seq=seq))
            sent += size
            seq = None if seq is None else seq + len(batch)
            if len(group) == PUSH_PIPELINE or scripts.target.cluster:
                reply = self._send(scripts, group, appended)
                length, appended, skipped = _sum(reply, appended, skipped)
                group = []
        if group:
            length, appended, skipped = _sum(
                self._send(scripts, group, appended), appended, skipped
            )
        elif appended + skipped == 0:  # nothing to push: the list as it is
            with redis_errors(scripts.target.url):
                length = int(scripts.target.client.llen(key))
        return Pushed(length, appended, skipped, sent)

    @staticmethod
    def _push_transactions(
        scripts: ScriptRunner, key: str, chunks: Iterable[bytes | str], head: PushHead
    ) -> Pushed:
        """Unsequenced batches as MULTI/EXEC transactions, each sent once: native RPUSHes
        (no chunk converted to a Lua string), then push.lua counting them."""
        meta = keys.meta_key(key)
        url = scripts.target.url
        length = appended = sent = count = 0
        try:
            with redis_errors(url):
                for group, size in _transactions(chunks):
                    count = sum(map(len, group))
                    rpushes = [("RPUSH", key, *batch) for batch in group]
                    counting = PushArgs.rpushed(key, meta, head, count, size)
                    try:
                        reply = scripts.run_after(rpushes, counting)
                    except SentUnconfirmed as exc:
                        carried = list(chain.from_iterable(group))
                        raise push_failed(scripts.target, key, exc, carried, appended) from None
                    length, appended, sent = reply.length, appended + count, sent + size
                if appended == 0:  # nothing to push: the list as it is
                    length = int(scripts.target.client.llen(key))
        except RefusedAfter as refused:  # the RPUSHes ran, push.lua refused to count them
            if wrong_type(refused.error):  # push.lua took them back (see there)
                raise another_type(url, refused.error, f"; {appended} appended before") from None
            raise OperationFailed(
                f"Redis at {mask_url(url)} refused to count a push to {key}: "
                f"{str(refused.error).splitlines()[0]}; {appended + count} chunks appended, "
                f"the last {count} not counted in its meta hash",
                hint="the chunks are in the buffer (compaction reports the count mismatch); "
                "push only the rest, once Redis accepts writes again",
            ) from None
        except OperationFailed as refused:  # refused while queued (EXECABORT): none of it ran
            raise OperationFailed(
                f"{refused.message}; {appended} chunks confirmed, the refused ones were not "
                "appended",
                hint=refused.hint,
            ) from None
        return Pushed(length, appended, 0, sent)

    @staticmethod
    def _send(scripts: ScriptRunner, group: list[PushArgs], before: int = 0) -> PushReply:
        """Run ``group`` in order (``before``: chunks this push appended already, for an
        error to count); their replies summed, the last one's length."""
        url = scripts.target.url
        key = group[0].chunks_key
        try:
            with redis_errors(url):
                try:
                    if len(group) == 1:
                        call = group[0]
                        # a sequenced call may be retried (push.lua skips what arrived)
                        if call.seq is not None:
                            return scripts.run(call)
                        return scripts.run_once(call)
                    # (sequenced: an unsequenced group goes as transactions)
                    replies = scripts.run_pipelined(group, in_order=True)
                except redis.exceptions.ConnectionError:  # (sequenced) a retry is safe…
                    largest = _largest(chain.from_iterable(call.chunks for call in group))
                    limit = _bulk_limit_passed(scripts.target, key, largest)
                    if limit is not None:  # … unless Redis refuses the call for a chunk
                        raise _refused_over_limit(url, key, largest, limit) from None
                    raise
        except SentUnconfirmed as exc:  # (unsequenced) the group may have run
            sent = [chunk for call in group for chunk in call.chunks]
            raise push_failed(scripts.target, key, exc, sent, before) from None
        return PushReply(
            replies[-1].length,
            sum(reply.appended for reply in replies),
            sum(reply.skipped for reply in replies),
        )

    def finish(
        self, scripts: ScriptRunner, key: str, head: PushHead, then: Sequence[Command] = ()
    ) -> None:
        """One call on the list and its meta hash (safe to repeat); on one server ``then``
        in the same round trip, after it."""
        call = PushArgs.finish(key, keys.meta_key(key), head)
        with redis_errors(scripts.target.url):
            if scripts.target.cluster:
                scripts.run(call)
                send_on_one_key(scripts.target, then)
            else:
                scripts.run_then(call, then)

    def snapshot(
        self, scripts: ScriptRunner, call: SnapshotArgs, lease: int, known: MetaRead | None = None
    ) -> tuple[dict[str, str], SnapshotReply]:
        """snapshot.lua on the list and its meta hash; nothing read apart."""
        with redis_errors(scripts.target.url):
            return {}, scripts.run(call)

    def after_delete(self, scripts: ScriptRunner, deleted: DeletedLife) -> None:
        """Nothing: ack.lua deleted both keys."""


class Split(Layout):
    """An untagged list on a Redis Cluster: the app's meta hash in another slot, genbuf's
    fields in ``{K}:genbuf`` beside the list (see the module)."""

    sequenced = False
    ack = AckLayout.SPLIT

    def state_key(self, chunks: str) -> str:
        """``{K}:genbuf``, in the list's slot."""
        return keys.state_key(chunks)

    def hashes(self, chunks: str) -> tuple[str, ...]:
        """The app's meta hash, then genbuf's own."""
        return (keys.meta_key(chunks), keys.state_key(chunks))

    def push(
        self,
        scripts: ScriptRunner,
        key: str,
        chunks: Iterable[bytes | str],
        head: PushHead,
        seq: int | None,
    ) -> Pushed:
        """Per PUSH_BATCH chunks, the list side and then the count (the order the layout
        relies on), each sent once."""
        if seq is not None:
            raise UsageError(
                f"sequenced pushes to {key} need list and meta hash in one slot on a "
                "Redis Cluster: the hash-tagged key template, GENERATION_KEY_TAGS=true",
                hint="set GENERATION_KEY_TAGS=true, or push without sequence numbers",
            )
        state, meta = keys.state_key(key), keys.meta_key(key)
        url = scripts.target.url
        length = appended = sent = 0
        with redis_errors(url):
            for batch in _batches(chunks):
                size = _total_bytes(batch)
                try:
                    listed = scripts.run_once(PushArgs.list_side(key, state, head, batch, size))
                except SentUnconfirmed as exc:
                    raise push_failed(scripts.target, key, exc, batch, appended) from None
                count = PushArgs.count_side(meta, head, listed.appended, size, listed.length)
                try:
                    scripts.run_once(count)
                except SentUnconfirmed:  # the chunks are in; their count may not be
                    confirmed = appended + listed.appended
                    raise outcome_unknown(url, key, confirmed=confirmed, in_doubt=0) from None
                except redis.exceptions.ResponseError as refused:
                    if not wrong_type(refused):
                        raise
                    # the list's slot is not the meta hash's: its side cannot be taken back
                    # as one step, and pushed again the chunks would be there twice
                    in_list = appended + listed.appended
                    raise another_type(
                        url,
                        refused,
                        f"; {in_list} chunk{'' if in_list == 1 else 's'} appended to the "
                        "list, not counted",
                        kept="the chunks are in the list: do not push them again (once the "
                        "key is gone, compaction takes them as a list without a count)",
                    ) from None
                length = listed.length
                appended += listed.appended
                sent += size
            if appended == 0:  # nothing to push: the list as it is
                length = int(scripts.target.client.llen(key))
        return Pushed(length, appended, 0, sent)

    def finish(
        self, scripts: ScriptRunner, key: str, head: PushHead, then: Sequence[Command] = ()
    ) -> None:
        """The list's length read first (another slot), then the meta hash marked, then
        ``then``."""
        meta = keys.meta_key(key)
        with redis_errors(scripts.target.url):
            length = int(on_key_node(scripts.target, key, lambda client: client.llen(key)))
            scripts.run(PushArgs.finish(meta, meta, head, length))
            send_on_one_key(scripts.target, then)

    def snapshot(
        self, scripts: ScriptRunner, call: SnapshotArgs, lease: int, known: MetaRead | None = None
    ) -> tuple[dict[str, str], SnapshotReply]:
        """The meta hash read first (or ``known``, read before: a counter read earlier
        only lags more), a deleted life a killed deleter left finished, a stale counter
        read again."""
        key = call.chunks_key
        read_only = call.mode == Mode.READ_ONLY
        with redis_errors(scripts.target.url):
            for _ in range(SPLIT_TRIES):
                if known is None:
                    known = self._read_meta(scripts, key, 0 if read_only else lease)
                (produced, there), known = known, None
                counter = produced.get(fields.CHUNK_COUNT, Counter.NONE)
                meta_hash = MetaHash.EXISTS if there else MetaHash.ABSENT
                read = replace(call, counter=counter, meta_hash=meta_hash)
                first_try = SplitTry.CONFIRMED if read_only else SplitTry.FIRST
                reply = scripts.run(replace(read, split_try=first_try))
                if reply.tag == SnapshotTag.UNFINISHED_DELETE:  # a deleter was killed
                    ended = DeletedLife(key, reply.trimmed, reply.stream_id, reply.ended_ttl)
                    self.after_delete(scripts, ended)
                elif reply.tag != SnapshotTag.VANISHED:
                    return produced, reply
                elif self._counter(scripts, key) == counter:  # the chunks did vanish
                    return produced, scripts.run(replace(read, split_try=SplitTry.CONFIRMED))
                # else: a life deleted in between (its counter was stale): read it all again
        raise StreamChanged(
            f"buffer {key} kept changing while its snapshot was taken",
            hint="nothing was written; run the command again",
        )

    def read_metas(
        self, scripts: ScriptRunner, chunks: Sequence[str], lease: int
    ) -> dict[str, MetaRead]:
        """Each list's meta hash (every field) and whether it exists, in one round trip
        to each node; one that would expire within ``lease`` seconds is extended to it
        (it must outlive the compaction reading it), in one more."""
        metas = [keys.meta_key(name) for name in chunks]
        reads: list[Keyed] = []
        for meta in metas:
            reads += [(meta, ("HGETALL", meta)), (meta, ("TTL", meta))]
        with redis_errors(scripts.target.url):
            replies = raise_first(pipeline_on_nodes(scripts.target, reads))
            ttls = [int(ttl) for ttl in replies[1::2]]
            short = [
                (m, ("EXPIRE", m, lease))
                for m, t in zip(metas, ttls, strict=True)
                if 0 <= t < lease
            ]
            if short:
                raise_first(pipeline_on_nodes(scripts.target, short))
        return {
            name: ({text(k): text(v) for k, v in _pairs(values)}, ttl != -2)
            for name, values, ttl in zip(chunks, replies[::2], ttls, strict=True)
        }

    def _read_meta(self, scripts: ScriptRunner, chunks: str, lease: int) -> MetaRead:
        """``read_metas`` of one list."""
        return self.read_metas(scripts, [chunks], lease)[chunks]

    @staticmethod
    def _counter(scripts: ScriptRunner, chunks: str) -> str:
        """The meta hash's chunk_count now ('-' when it has none)."""
        meta = keys.meta_key(chunks)
        value = on_key_node(
            scripts.target, meta, lambda client: client.hget(meta, fields.CHUNK_COUNT)
        )
        return Counter.NONE if value is None else text(value)

    def after_delete(self, scripts: ScriptRunner, deleted: DeletedLife) -> None:
        """Take the deleted life's chunks off the meta hash's count, then drop genbuf's
        hash. Safe to repeat, and to run from another process (one killed between the
        steps leaves `ended`, which the next snapshot finishes; a release repeated then
        leaves a next life's meta hash alone: see release_meta.lua). Once the hash is
        dropped, the release's mark is kept a little longer only (REMEMBER_AFTER_DROP)."""
        self.after_deletes(scripts, [deleted])

    def after_deletes(self, scripts: ScriptRunner, deleted: list[DeletedLife]) -> None:
        """``after_delete`` of each: every meta hash released, then every genbuf hash
        dropped, then the marks of the releases shortened; three round trips for all of
        them, each key's steps in that order."""
        releases = [
            ReleaseMetaArgs.of(one.key, one.life, one.stream, one.ended_ttl) for one in deleted
        ]
        drops = [DropStateArgs(keys.state_key(one.key), stream_id=one.stream) for one in deleted]
        with redis_errors(scripts.target.url):
            released = scripts.run_pipelined(releases)
            scripts.run_pipelined(drops)
            pairs = zip(deleted, released, strict=True)
            marks = [_forget_release(one) for one, done in pairs if done]
            if marks:
                raise_first(pipeline_on_nodes(scripts.target, marks))


def _forget_release(deleted: DeletedLife) -> Keyed:
    """The EXPIRE that shortens a release's mark once genbuf's hash is dropped (see
    release_meta.py)."""
    mark = keys.released_key(keys.meta_key(deleted.key))
    return (mark, ("EXPIRE", mark, REMEMBER_AFTER_DROP))


ONE_SLOT = OneSlot()
SPLIT = Split()


def layout_of(target: RedisTarget, chunks: str) -> Layout:
    """The layout of the list ``chunks`` on ``target``: split where it is an untagged key
    on a Redis Cluster, else one slot. The one place the choice is made."""
    return SPLIT if target.cluster and keys.hash_tag(chunks) is None else ONE_SLOT
