"""test-redis-buffer: a smoke test of the configured Redis through the real code paths."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from genbuffer import keys
from genbuffer.documents import Document
from genbuffer.observation.durability import durability_checks as doctor_durability_checks
from genbuffer.prefixes import prefix_report
from genbuffer.redis import GenerationBuffer
from genbuffer.redis.layout import layout_of
from genbuffer.settings import mask_url

__all__ = ["SmokeCheck", "SmokeResult", "smoke_test"]

# One smoke-test buffer lives under these ids; its key is outside every real generation.
_SMOKE_IDS = (1, None, 1)


class SmokeCheck(Document):
    """One step of the smoke test: `ok` false fails it; `warn` passes with a caveat."""

    name: str
    ok: bool
    detail: str
    warn: bool = False


class SmokeResult(Document):
    """What `test-redis-buffer --json` prints."""

    ok: bool
    key: str
    chunks: int
    kept: bool
    elapsed_ms: float
    checks: list[SmokeCheck]


def _sample_chunk(index: int) -> bytes:
    # multibyte text, and now and then bytes that are not UTF-8, to catch any decoding
    if index % 7 == 3:
        return b"\x00\xff raw bytes " + str(index).encode()
    return f"chunk {index:05d} ✓ ñ\n".encode()


def smoke_test(buffer: GenerationBuffer, chunks: int = 20, keep: bool = False) -> SmokeResult:
    """Push, read back, check order, counters, TTL and idempotence, then clean up."""
    started = time.perf_counter()
    key = keys.smoke_chunks_key(secrets.token_hex(8), buffer.prefix, tagged=buffer.tagged)
    meta = keys.meta_key(key)
    layout = layout_of(buffer.target, key)  # the app's untagged keys on a cluster: split
    checks: list[SmokeCheck] = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append(SmokeCheck(name=name, ok=ok, detail=detail))

    sent = [_sample_chunk(i) for i in range(chunks)]
    pushed = False  # nothing to clean up before the first push
    try:
        buffer.keyspace.ping()
        check("ping", True, f"{mask_url(buffer.url)} answered")
        checks.extend(durability_checks(buffer))
        report = prefix_report(buffer)
        check(
            "prefix",
            report.buffers_here or not report.elsewhere,
            f"buffers under {report.configured!r}"
            if report.buffers_here
            else f"no buffer anywhere yet (prefix {report.configured!r})"
            if not report.elsewhere
            else f"no buffer under {report.configured!r}, but under "
            + ", ".join(f"{p!r} ({n} keys)" for p, n in sorted(report.elsewhere.items())[:5])
            + ": set REDIS_PREFIX",
        )
        pushed = True
        for index, chunk in enumerate(sent):
            buffer.push_to_key(key, [chunk], _SMOKE_IDS, seq=index if layout.sequenced else None)
        check("push", True, f"{chunks} chunks pushed one at a time")
        if not layout.sequenced:  # sequenced pushes need one slot: the cluster's own check
            slots = buffer.keyspace.slots([key, layout.state_key(key)])
            check(
                "one slot",
                len(set(slots)) == 1,
                f"list and genbuf's hash in slot {slots[0]}, the meta hash apart",
            )
        else:
            retried = buffer.push_to_key(key, [sent[-1]], _SMOKE_IDS, seq=chunks - 1)
            check(
                "idempotent retry",
                retried.skipped == 1 and retried.appended == 0,
                f"re-sent chunk skipped={retried.skipped} appended={retried.appended}",
            )
        snapshot = buffer.protocol.snapshot(key)
        got = [chunk for page in buffer.protocol.read(snapshot, 0, snapshot.end) for chunk in page]
        check("read back", got == sent, f"{len(got)} of {chunks} chunks, byte-exact and in order")
        total = sum(len(chunk) for chunk in sent)
        counted = (snapshot.counted, snapshot.meta.get("bytes"))
        check(
            "counters",
            counted == (chunks, str(total)),
            f"chunk_count={counted[0]} bytes={counted[1]} (want {chunks}, {total})",
        )
        ttls = (buffer.keyspace.ttl_of(key), buffer.keyspace.ttl_of(meta))
        check(
            "ttl",
            all(0 < ttl <= buffer.ttl for ttl in ttls),
            f"list {ttls[0]}s, meta {ttls[1]}s (GENERATION_CHUNK_TTL={buffer.ttl})",
        )
    finally:
        if pushed and not keep:
            _clean(buffer, sorted({key, *layout.hashes(key)}), check)
    return SmokeResult(
        ok=all(c.ok for c in checks),
        key=key,
        chunks=chunks,
        kept=keep,
        elapsed_ms=round((time.perf_counter() - started) * 1000, 1),
        checks=checks,
    )


def durability_checks(buffer: GenerationBuffer) -> list[SmokeCheck]:
    """Can this server lose chunks on its own? doctor's eviction (fail) and persistence
    (warn) checks, as smoke-test lines."""
    return [
        SmokeCheck(
            name=check.name,
            ok=check.status != "fail",
            warn=check.status == "warn",
            detail=check.message + (f"; {check.hint}" if check.hint else ""),
        )
        for check in doctor_durability_checks(buffer)
    ]


def _clean(
    buffer: GenerationBuffer, names: list[str], check: Callable[[str, bool, str], None]
) -> None:
    buffer.keyspace.delete(names)
    left = [name for name in names if buffer.keyspace.exists(name)]
    check("clean-up", not left, "keys deleted" if not left else f"left behind: {left}")
