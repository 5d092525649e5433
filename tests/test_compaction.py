"""assemble_and_persist on both backends: persistence, validation modes, deletion, appends."""

from __future__ import annotations

import contextlib
import json
import threading

import pytest

from genbuffer.compaction import CompactionRequest, Found, Options
from genbuffer.db import transaction
from genbuffer.errors import ForeignArtifact, GenerationNotFound, NothingToCompact
from tests.conftest import Stack
from tests.helpers import audit_lines, compact, sequenced, stored_bytes

DOC = {"title": "Plan", "steps": ["añadir", "probar"], "score": 0.75}

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def _push_json(stack: Stack, org: int, gen: int, text: str, size: int = 7, **kw: object) -> bytes:
    data = text.encode()
    chunks = [data[i : i + size] for i in range(0, len(data), size)]  # splits multibyte chars
    for chunk in chunks:
        stack.buffer.push_chunk(org, gen, chunk, **kw)  # type: ignore[arg-type]
    return data


def test_clean_json_is_persisted_and_buffer_deleted(stack: Stack) -> None:
    """A valid JSON stream lands byte-exact, llm_response is set, metadata has no blob."""
    gen = stack.repository.create_generation(12)
    data = _push_json(stack, 12, gen, json.dumps(DOC, ensure_ascii=False))
    result = compact(stack, 12, gen, delete=True)
    assert result.ok and result.persisted and result.deleted
    assert result.issues == [] and result.validation_id is None
    assert stored_bytes(stack, gen) == data
    row = stack.repository.get_generation(gen)
    assert row is not None
    assert row.llm_response == DOC
    assert "compacted" not in row.metadata
    assert row.metadata["chunk_count"] == row.chunk_count == result.chunk_count
    assert row.metadata["bytes"] == len(data)
    assert row.compacted_by == "genbuf"
    assert stack.buffer.keyspace.generation_keys(12, gen) == []
    assert stack.repository.backups(gen) == [data[i : i + 7] for i in range(0, len(data), 7)]


def test_soft_mode_persists_invalid_json_and_records_the_issue(stack: Stack) -> None:
    """Soft mode: persisted anyway, validation_errors in metadata, issue row, JSONL line."""
    gen = stack.repository.create_generation(12)
    data = _push_json(stack, 12, gen, '{"title": "cut off')
    result = compact(stack, 12, gen, strict=False)
    assert result.persisted and result.ok
    assert [issue["code"] for issue in result.issues] == ["invalid_json"]
    row = stack.repository.get_generation(gen)
    assert row is not None
    assert stored_bytes(stack, gen) == data
    assert row.llm_response is None
    assert row.metadata["validation_errors"][0]["code"] == "invalid_json"
    assert row.last_validation_issue_id == result.validation_id
    issue = stack.repository.issue(result.validation_id or 0)
    assert issue is not None and issue["mode"] == "soft" and issue["source"] == "compaction"
    (line,) = audit_lines(stack.audit_log)
    assert line["validation_id"] == result.validation_id
    assert set(line) == {
        "ts",
        "validation_id",
        "organization_id",
        "generation_id",
        "mode",
        "source",
        "errors",
    }


def test_strict_mode_changes_nothing_but_records_the_issue(stack: Stack) -> None:
    """Strict: row untouched, buffer kept, issue row and JSONL written, ok=false."""
    gen = stack.repository.create_generation(12, metadata={"keep": True})
    before = stack.repository.get_generation(gen)
    _push_json(stack, 12, gen, "not json at all")
    result = compact(stack, 12, gen, strict=True, delete=True)
    assert not result.ok and not result.persisted and not result.deleted
    assert result.validation_id is not None
    assert stack.repository.get_generation(gen) == before
    assert stack.buffer.keyspace.generation_keys(12, gen) != []
    assert stack.repository.issue(result.validation_id)["mode"] == "strict"  # type: ignore[index]
    assert audit_lines(stack.audit_log)[0]["validation_id"] == result.validation_id
    assert stack.repository.backups(gen) == []


def test_chunks_pushed_after_a_compaction_are_appended(stack: Stack) -> None:
    """A second compaction appends new chunks; nothing is overwritten or repeated."""
    gen = stack.repository.create_generation(3)
    stack.buffer.push_many(3, gen, [b"[1,", b"2"])
    first = compact(stack, 3, gen)
    stack.buffer.push_many(3, gen, [b",3", b"]"])
    second = compact(stack, 3, gen)
    assert (first.new_chunks, second.new_chunks) == (2, 2)
    assert stored_bytes(stack, gen) == b"[1,2,3]"
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response == [1, 2, 3] and row.chunk_count == 4
    again = compact(stack, 3, gen, delete=True)
    assert again.ok and not again.persisted and again.deleted
    assert stored_bytes(stack, gen) == b"[1,2,3]"


def test_delete_then_new_pushes_start_a_new_stream_that_is_appended(stack: Stack) -> None:
    """After --delete removed the buffer, late chunks form a new stream and are appended."""
    gen = stack.repository.create_generation(3)
    stack.buffer.push_many(3, gen, [b"ab", b"cd"])
    assert compact(stack, 3, gen, delete=True).deleted
    stack.buffer.push_chunk(3, gen, b"ef")
    assert compact(stack, 3, gen, delete=True).new_chunks == 1
    assert stored_bytes(stack, gen) == b"abcdef"


def test_row_of_another_organization_is_not_found(stack: Stack) -> None:
    """A compaction writes only to the row of the organization it was given."""
    gen = stack.repository.create_generation(1)
    stack.buffer.push_chunk(2, gen, b"{}")
    with pytest.raises(GenerationNotFound):
        compact(stack, 2, gen)
    assert stored_bytes(stack, gen) is None


def test_missing_buffer_is_nothing_to_compact(stack: Stack) -> None:
    """No keys at all: NothingToCompact (exit 1)."""
    gen = stack.repository.create_generation(1)
    with pytest.raises(NothingToCompact):
        compact(stack, 1, gen)


def test_scenario_key_comes_from_the_row(stack: Stack) -> None:
    """The row's scenario_id picks the scenario key."""
    gen = stack.repository.create_generation(4, scenario_id=77)
    stack.buffer.push_chunk(4, gen, b'"x"', scenario_id=77)
    result = compact(stack, 4, gen)
    assert result.key.endswith(f"org:4:scenario:77:generation:{gen}:chunks")
    assert stored_bytes(stack, gen) == b'"x"'


def test_expired_chunks_are_reported_not_silently_truncated(stack: Stack) -> None:
    """Meta counts more chunks than the list holds: chunk_count_mismatch, ok=false."""
    gen = stack.repository.create_generation(5)
    result_push = stack.buffer.push_many(5, gen, [b"[1", b",2", b"]"])
    stack.buffer.client.lpop(result_push.key)  # a chunk that vanished (expired, evicted)
    result = compact(stack, 5, gen)
    assert not result.ok
    assert "chunk_count_mismatch" in [issue["code"] for issue in result.issues]
    assert result.validation_id is not None


def test_list_expired_but_meta_left_is_reported(stack: Stack) -> None:
    """The whole list expired: nothing to persist, the loss is recorded, ok=false."""
    gen = stack.repository.create_generation(5)
    pushed = stack.buffer.push_many(5, gen, [b"a", b"b"])
    stack.buffer.client.delete(pushed.key)
    result = compact(stack, 5, gen)
    assert not result.ok and not result.persisted
    assert [issue["code"] for issue in result.issues] == ["chunk_count_mismatch"]


def test_dry_run_changes_nothing(stack: Stack) -> None:
    """--dry-run reports but writes no row, no issue, no audit line, no deletion."""
    gen = stack.repository.create_generation(6)
    stack.buffer.push_chunk(6, gen, b"oops")
    result = compact(stack, 6, gen, dry_run=True, delete=True)
    assert result.dry_run and not result.persisted and result.validation_id is None
    assert result.issues and stored_bytes(stack, gen) is None
    assert audit_lines(stack.audit_log) == []
    assert stack.buffer.keyspace.generation_keys(6, gen) != []


@pytest.mark.parametrize(
    "chunks",
    [
        [b"\xff\xfe", b"\x00", b"\x80abc"],  # not UTF-8, NUL
        ["🙂".encode()[:2], "🙂".encode()[2:]],  # a 4-byte character split across chunks
        [b'{"a": "nul \\u0000 here"}'],  # JSON that JSONB cannot hold
        [b'{"big": 1e400, "s": "\\ud800"}'],  # overflowing float, lone surrogate
    ],
)
def test_any_bytes_are_stored_byte_exact(stack: Stack, chunks: list[bytes]) -> None:
    """Content never breaks a compaction; unstorable JSON leaves llm_response null."""
    gen = stack.repository.create_generation(8)
    stack.buffer.push_many(8, gen, chunks)
    result = compact(stack, 8, gen, strict=False)
    assert result.persisted
    assert stored_bytes(stack, gen) == b"".join(chunks)
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response is None


def test_oversize_aborts_even_in_soft_mode(stack: Stack) -> None:
    """Over GENERATION_MAX_BYTES: an issue, nothing persisted, buffer kept."""
    gen = stack.repository.create_generation(9)
    stack.buffer.push_many(9, gen, [b"x" * 100] * 50)
    result = compact(stack, 9, gen, strict=False, delete=True, config={"max_bytes": 1000})
    assert not result.ok and not result.persisted and not result.deleted
    assert result.issues[0]["code"] == "oversize"
    assert stored_bytes(stack, gen) is None
    assert stack.buffer.protocol.snapshot(result.key).length == 50


def test_schema_violation_has_json_paths(stack: Stack) -> None:
    """llm_response is checked against the configured JSON Schema."""
    schema = {"type": "object", "required": ["title"], "properties": {"score": {"type": "number"}}}
    gen = stack.repository.create_generation(10)
    stack.buffer.push_chunk(10, gen, b'{"score": "high"}')
    result = compact(stack, 10, gen, strict=True, config={"schema": schema})
    assert not result.ok
    assert {(i["code"], i["path"]) for i in result.issues} == {
        ("schema_violation", "$"),
        ("schema_violation", "$.score"),
    }


@pytest.mark.parametrize(
    ("schema", "said"),
    [
        ({"properties": {"a": {"$ref": "#/definitions/missing"}}}, "resolves to nothing"),
        ({"type": 5}, "not a valid JSON Schema at $.type"),
    ],
)
def test_an_unusable_schema_is_a_bad_setting_not_a_failed_generation(
    embedded: Stack, schema: dict[str, object], said: str
) -> None:
    """GENERATION_JSON_SCHEMA with a $ref that resolves to nothing, or that breaks its
    meta-schema: exit 2 with one line when the command starts, for compact-generation
    and compact-pending alike; the buffer is left as it was (no failed attempt counted)."""
    path = embedded.tmp_path / "schema.json"
    path.write_text(json.dumps(schema))
    embedded.env["GENERATION_JSON_SCHEMA"] = str(path)
    gen = embedded.repository.create_generation(12)
    key = embedded.buffer.push_chunk(12, gen, b'{"a": 1}').key
    for args in (["compact-generation", "12", str(gen)], ["compact-pending"]):
        done = embedded.cli(*args)
        assert done.exit_code == 2, done.output
        assert "GENERATION_JSON_SCHEMA" in done.output and said in done.output
        assert "Traceback" not in done.output
    assert "attempts" not in embedded.buffer.protocol.snapshot(key).meta
    row = embedded.repository.get_generation(gen)
    assert row is not None and row.compacted is None


def test_invalid_row_metadata_is_an_issue(stack: Stack) -> None:
    """A reserved metadata key of the wrong type is metadata_invalid."""
    gen = stack.repository.create_generation(11, metadata={"chunk_count": "three"})
    stack.buffer.push_chunk(11, gen, b"{}")
    result = compact(stack, 11, gen, strict=True)
    assert not result.ok
    assert result.issues[0] == {
        "code": "metadata_invalid",
        "message": "metadata.chunk_count must be int, found str",
        "severity": "error",
        "path": "$.chunk_count",
    }


def test_legacy_blob_must_be_migrated_first(stack: Stack) -> None:
    """A row holding a blob genbuf did not write is refused, not overwritten."""
    gen = stack.repository.create_generation(13, metadata={"compacted": "YWJj"})
    stack.buffer.push_chunk(13, gen, b"x")
    with pytest.raises(ForeignArtifact):
        compact(stack, 13, gen)


def test_pushes_during_compactions_are_never_lost(stack: Stack) -> None:
    """A producer pushing while compactors with --delete run: every chunk lands once."""
    gen = stack.repository.create_generation(14)
    sent = [f"<{i}>".encode() for i in range(400)]
    done = threading.Event()

    def produce() -> None:
        for chunk in sent:
            stack.buffer.push_chunk(14, gen, chunk)
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    while not done.is_set():
        with contextlib.suppress(NothingToCompact):
            compact(stack, 14, gen, delete=True, config={"backup_chunks": False})
    producer.join()
    with contextlib.suppress(NothingToCompact):
        compact(stack, 14, gen, delete=True)
    assert stored_bytes(stack, gen) == b"".join(sent)
    assert stack.buffer.keyspace.generation_keys(14, gen) == []


def test_two_concurrent_compactors_neither_lose_nor_duplicate(stack: Stack) -> None:
    """Two compactors with --delete and a producer, all at once: each chunk lands once."""
    gen = stack.repository.create_generation(15)
    # never JSON, alone or together: a compactor that drains and deletes the buffer ends
    # its stream, and a new stream whose first snapshot held one chunk that parses alone
    # (``[233]``) would replace the provisional artifact by design (json_new_document)
    sent = [f"<{i}>".encode() for i in range(300)]
    done = threading.Event()
    failures: list[BaseException] = []

    def produce() -> None:
        for chunk in sent:
            stack.buffer.push_chunk(15, gen, chunk)
        done.set()

    def compactor() -> None:
        try:
            while not done.is_set():
                with contextlib.suppress(NothingToCompact):
                    compact(stack, 15, gen, delete=True)
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)

    threads = [threading.Thread(target=f) for f in (produce, compactor, compactor)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with contextlib.suppress(NothingToCompact):  # the compactors may have drained it all
        compact(stack, 15, gen, delete=True)
    assert stored_bytes(stack, gen) == b"".join(sent)
    assert stack.repository.backups(gen) == sent


def test_list_expired_and_recreated_keeps_positions_right(stack: Stack) -> None:
    """The list expires under a live meta hash and new pushes recreate it: the new
    chunks are appended after what the row holds, and the gone ones are reported."""
    gen = stack.repository.create_generation(16)
    key = stack.buffer.push_many(16, gen, [b"a", b"b"]).key
    compact(stack, 16, gen)  # persisted a, b; buffer kept (no --delete)
    stack.buffer.push_many(16, gen, [b"c", b"d"])
    stack.buffer.client.delete(key)  # c, d expire before any compaction saw them
    stack.buffer.push_many(16, gen, [b"e", b"f"])
    result = compact(stack, 16, gen, delete=True)
    assert stored_bytes(stack, gen) == b"abef"
    assert not result.ok and result.deleted
    (lost,) = [i for i in result.issues if i["code"] == "chunk_count_mismatch"]
    assert lost["message"].startswith("2 chunks") and lost["severity"] == "error"


def test_sequence_gap_is_reported(stack: Stack) -> None:
    """A producer that skipped sequence numbers: persisted, but ok=false with sequence_gap."""
    sequenced(stack)
    gen = stack.repository.create_generation(17)
    stack.buffer.push_chunk(17, gen, b"[1", seq=0)
    stack.buffer.push_chunk(17, gen, b"]", seq=2)
    result = compact(stack, 17, gen)
    assert result.persisted and not result.ok
    assert "sequence_gap" in [i["code"] for i in result.issues]


def test_chunk_backups_span_several_batches(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backups written over several statements (by count and by bytes) are all there, in
    order, with consecutive seq numbers, on every backend."""
    monkeypatch.setattr(transaction, "BACKUP_BATCH", 3)
    monkeypatch.setattr(transaction, "BACKUP_BATCH_POSTGRES", 4)
    monkeypatch.setattr(transaction, "BACKUP_BATCH_BYTES", 10)
    gen = stack.repository.create_generation(8)
    chunks = [bytes([97 + i]) * (1 + i % 7) for i in range(17)]
    stack.buffer.push_many(8, gen, chunks)
    assert compact(stack, 8, gen).persisted
    more = [b"x" * 12, b"y"]
    stack.buffer.push_many(8, gen, more)
    assert compact(stack, 8, gen).new_chunks == 2
    assert stack.repository.backups(gen) == chunks + more


def test_a_request_is_ids_options_and_found() -> None:
    """The switches by name build the same two values given whole (the public API's
    spelling, and the engine's for the buffer it found); both at once is an error."""
    by_name = CompactionRequest(1, 2, 3, delete=True, strict=False, dry_run=True, force=True)
    whole = CompactionRequest(
        1, 2, 3, options=Options(delete=True, strict=False, dry_run=True, force=True)
    )
    assert by_name == whole and by_name.found is None
    engine = CompactionRequest(1, 2, delete=True, key="k", exact_key=True, selected="idle")
    assert engine.found == Found(key="k", selected="idle")
    read = (engine.delete, engine.key, engine.exact_key, engine.selected)
    assert read == (True, "k", True, "idle")
    assert engine.acknowledge and by_name.acknowledge and by_name.dry_run and by_name.force
    later = CompactionRequest(1, 2, acknowledge=False)
    assert later.found == Found(trim_later=True) and not later.acknowledge
    assert CompactionRequest(1, 2, exact_key=True).found == Found()
    with pytest.raises(TypeError, match="whole, or their switches"):
        CompactionRequest(1, 2, options=Options(), delete=True)
    with pytest.raises(TypeError, match="whole, or their switches"):
        CompactionRequest(1, 2, found=Found(), selected="idle")
