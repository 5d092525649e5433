"""Large artifacts offloaded to an object store: a directory, and moto's real S3 server."""

from __future__ import annotations

import base64
import grp
import hashlib
import json
import os
import random
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select, update

from genbuffer.compaction import CompactionRequest, assemble_and_persist
from genbuffer.compaction import scan as scan_module
from genbuffer.db.rows import CHUNKS, GEN, HISTORY
from genbuffer.errors import ForeignArtifact, StreamChanged
from genbuffer.objects.artifact import OBJECT_PATH, OUTPUT_BLOCK, read_verified, upload
from genbuffer.objects.offload import Offload
from genbuffer.objects.store import Store, open_store, s3_config
from genbuffer.observation.show_generation import read_artifact
from genbuffer.settings import Settings
from tests.conftest import Stack, _embedded_stack
from tests.helpers import compact, expire_lease
from tests.support.objects import S3Server
from tests.support.runner import run_genbuf, spawn_genbuf

ORG = 31
THRESHOLD = 4096
ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def offloading(stack: Stack, store_env: dict[str, str], **extra: str) -> Stack:
    """The stack, offloading artifacts over THRESHOLD bytes to ``store_env``'s store."""
    stack.env.update(store_env)
    stack.env.setdefault("GENERATION_OFFLOAD_BYTES", str(THRESHOLD))
    stack.env.update(extra)
    return stack


def store_of(stack: Stack) -> Store:
    """The stack's object store."""
    return open_store(stack.env["GENERATION_OFFLOAD_URL"], stack.settings)


def objects(stack: Stack) -> list[str]:
    """The paths of every object in the stack's store."""
    return sorted(found.path for found in store_of(stack).objects())


def json_chunks(count: int, size: int = 200) -> list[bytes]:
    """A JSON array pushed as ``count`` chunks of about ``size`` bytes."""
    items = [json.dumps({"i": i, "text": "x" * size}) for i in range(count)]
    body = ("[" + ",".join(items) + "]").encode()
    step = max(1, len(body) // count)
    return [body[i : i + step] for i in range(0, len(body), step)]


def test_a_large_artifact_goes_to_the_store_and_reads_back(
    stack: Stack, object_store: dict[str, str]
) -> None:
    """Over GENERATION_OFFLOAD_BYTES: `compacted` is the object's URL, metadata says what
    it holds, no chunk backups; the library and show-generation read the bytes back."""
    offloading(stack, object_store)
    small_gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, small_gen, [b'{"small": ', b"true}"])
    gen = stack.repository.create_generation(ORG)
    chunks = json_chunks(100)
    stack.buffer.push_many(ORG, gen, chunks)
    pushed = b"".join(chunks)
    assert len(pushed) > THRESHOLD

    result = compact(stack, ORG, gen, delete=True)
    assert result.persisted and result.deleted and result.ok
    assert result.sha256 == hashlib.sha256(pushed).hexdigest()
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted is not None
    digest = hashlib.sha256(pushed).hexdigest()
    assert row.compacted == f"{store_of(stack).url}/org-{ORG}/gen-{gen}/{digest}"
    assert row.metadata["offloaded"] == {
        "url": row.compacted,
        "bytes": len(pushed),
        "sha256": digest,
        "compression": "none",
        "content_type": "application/json",
        "stored_bytes": len(pushed),
    }
    assert row.metadata["sha256"] == digest and row.metadata["bytes"] == len(pushed)
    assert row.llm_response == json.loads(pushed)  # parsed: under PARSE_LIMIT
    assert objects(stack) == [f"org-{ORG}/gen-{gen}/{digest}"]
    with stack.repository.engine.connect() as connection:
        backups = connection.execute(
            select(func.count()).select_from(CHUNKS).where(CHUNKS.c.generation_id == gen)
        ).scalar_one()
    assert backups == 0  # the store holds the copy

    data, facts = read_artifact(
        stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
    )
    assert data == pushed and facts.verified and facts.offloaded == row.compacted
    assert compact(stack, ORG, small_gen).persisted
    small = stack.repository.get_generation(small_gen)
    assert small is not None and small.compacted is not None
    assert base64.b64decode(small.compacted) == b'{"small": true}'
    assert "offloaded" not in small.metadata
    assert len(objects(stack)) == 1


def test_zstd_objects_are_smaller_and_read_back_exactly(
    redis_stack: Stack, object_store: dict[str, str], tmp_path: Path
) -> None:
    """GENERATION_OFFLOAD_COMPRESSION=zstd: a .zst object, the same bytes back (CLI too)."""
    stack = offloading(redis_stack, object_store, GENERATION_OFFLOAD_COMPRESSION="zstd")
    gen = stack.repository.create_generation(ORG)
    chunks = json_chunks(300)
    stack.buffer.push_many(ORG, gen, chunks)
    pushed = b"".join(chunks)
    assert compact(stack, ORG, gen).persisted
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted is not None
    assert row.compacted.endswith(".zst")
    record = row.metadata["offloaded"]
    assert record["compression"] == "zstd" and record["stored_bytes"] < len(pushed) // 4
    data, _ = read_artifact(
        stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
    )
    assert data == pushed
    if stack.name == "servers":  # a separate process reads what this one wrote
        out = tmp_path / "artifact.json"
        done = run_genbuf(["show-generation", str(ORG), str(gen), "-o", str(out)], stack.env)
        assert done.returncode == 0, done.stderr
        assert out.read_bytes() == pushed


def test_new_chunks_append_to_an_offloaded_artifact(
    stack: Stack, object_store: dict[str, str]
) -> None:
    """A stream compacted while it goes on: each compaction writes the whole artifact to a
    new object (the held object's bytes, then the new chunks); the old one is an orphan
    that purge-objects removes, while the row's object is kept."""
    offloading(stack, object_store)
    gen = stack.repository.create_generation(ORG)
    first = [b"a" * 3000, b"b" * 3000]
    stack.buffer.push_many(ORG, gen, first)
    assert compact(stack, ORG, gen).persisted
    before = objects(stack)
    more = [b"c" * 100, b"d" * 100]
    stack.buffer.push_many(ORG, gen, more)
    result = compact(stack, ORG, gen)
    assert result.persisted and result.new_chunks == 2 and result.chunk_count == 4
    everything = b"".join(first + more)
    data, _ = read_artifact(
        stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
    )
    assert data == everything
    assert len(objects(stack)) == 2 and before[0] in objects(stack)

    done = stack.cli("purge-objects", "--grace", "0s", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert (summary["orphans"], summary["deleted"], summary["referenced"]) == (1, 1, 1)
    assert objects(stack) == [f"org-{ORG}/gen-{gen}/{hashlib.sha256(everything).hexdigest()}"]
    data, _ = read_artifact(
        stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
    )
    assert data == everything


def test_a_compaction_killed_after_its_upload_leaves_an_orphan_and_a_retry_one_object(
    servers: Stack, object_store: dict[str, str]
) -> None:
    """kill -9 between the upload and the commit: the row is untouched (it points at no
    object), the object is an orphan; the retry ends with one object and the row on it;
    purge-objects then has nothing to delete, and before the retry it deletes the orphan."""
    stack = offloading(servers, object_store)
    gen = stack.repository.create_generation(ORG)
    chunks = json_chunks(80)
    stack.buffer.push_many(ORG, gen, chunks)
    args = ["compact-generation", str(ORG), str(gen), "--delete"]
    killed = run_genbuf(args, {**stack.env, "GENBUFFER_CRASH_AT": "after_upload"}, faults=True)
    assert killed.returncode == -9, killed.stderr
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted is None
    orphan = objects(stack)
    assert len(orphan) == 1

    dry = run_genbuf(["purge-objects", "--grace", "0s", "--dry-run", "--json"], stack.env)
    assert dry.returncode == 0, dry.stderr
    assert (json.loads(dry.stdout)["orphans"], objects(stack)) == (1, orphan)
    young = run_genbuf(["purge-objects", "--grace", "1h", "--json"], stack.env)
    assert json.loads(young.stdout)["young"] == 1 and objects(stack) == orphan

    retried = run_genbuf(args, stack.env)
    assert retried.returncode == 0, retried.stderr
    assert objects(stack) == orphan  # the same name: the same content
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted == store_of(stack).url_of(orphan[0])
    purged = run_genbuf(["purge-objects", "--grace", "0s", "--json"], stack.env)
    assert json.loads(purged.stdout)["deleted"] == 0 and objects(stack) == orphan
    shown = run_genbuf(["show-generation", str(ORG), str(gen)], stack.env)
    assert shown.returncode == 0 and shown.stdout.encode() == b"".join(chunks)


def test_purge_objects_keeps_history_young_and_foreign_objects(
    embedded: Stack, tmp_path: Path
) -> None:
    """An artifact a regenerated stream replaced stays referenced by the history table;
    names genbuf does not write are left alone; batches of one find the same."""
    stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"})
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"x" * 5000])
    stack.buffer.finish(ORG, gen)
    assert compact(stack, ORG, gen, delete=True).persisted
    stack.buffer.push_many(ORG, gen, [b"y" * 5000])  # a new stream: replaces, keeps history
    result = compact(stack, ORG, gen, delete=True)
    assert result.persisted and result.regenerated == "replaced"
    store = store_of(stack)
    store.put("notes/readme.txt", [b"not genbuf's"], "text/plain")
    with stack.repository.engine.connect() as connection:
        kept = connection.execute(select(HISTORY.c.compacted)).scalars().all()
    assert len(kept) == 1 and kept[0] is not None and kept[0].startswith("file://")
    done = stack.cli("purge-objects", "--grace", "0s", "--batch-size", "1", "--json")
    summary = json.loads(done.stdout)
    assert (summary["objects"], summary["referenced"], summary["foreign"]) == (3, 2, 1)
    assert summary["deleted"] == 0 and len(objects(stack)) == 3


def test_offload_compacted_moves_base64_rows_resumably(
    stack: Stack, object_store: dict[str, str]
) -> None:
    """Rows compacted before offloading was on move to the store; llm_response stays;
    --dry-run moves nothing; a second run finds nothing; small rows stay."""
    pushed: dict[int, bytes] = {}
    for count in (50, 60, 2):
        gen = stack.repository.create_generation(ORG)
        chunks = json_chunks(count)
        stack.buffer.push_many(ORG, gen, chunks)
        assert compact(stack, ORG, gen, delete=True).persisted
        pushed[gen] = b"".join(chunks)
    large = [gen for gen, data in pushed.items() if len(data) >= THRESHOLD]
    assert len(large) == 2
    offloading(stack, object_store)
    dry = stack.cli("offload-compacted", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.stdout)["offloaded"] == 2 and objects(stack) == []
    done = stack.cli("offload-compacted", "--batch-size", "1", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert (summary["candidates"], summary["offloaded"]) == (2, 2)
    assert summary["bytes"] == sum(len(pushed[gen]) for gen in large)
    for gen, data in pushed.items():
        row = stack.repository.get_generation(gen)
        assert row is not None and row.compacted is not None
        assert row.llm_response == json.loads(data)
        assert ("offloaded" in row.metadata) == (gen in large)
        got, _ = read_artifact(
            stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
        )
        assert got == data
    again = json.loads(stack.cli("offload-compacted", "--json").stdout)
    assert (again["candidates"], again["offloaded"]) == (0, 0)
    assert len(objects(stack)) == 2


def test_offload_compacted_killed_midway_is_finished_by_the_next_run(
    servers: Stack, object_store: dict[str, str]
) -> None:
    """kill -9 after the first upload: nothing committed; a run while the dead run's lease
    is still valid says it is running, the first after it lapsed moves both rows, and
    purge-objects finds no orphan (the rerun wrote the same object)."""
    pushed = {}
    for count in (50, 60):
        gen = servers.repository.create_generation(ORG)
        servers.buffer.push_many(ORG, gen, json_chunks(count))
        assert compact(servers, ORG, gen, delete=True).persisted
        pushed[gen] = b"".join(json_chunks(count))
    stack = offloading(servers, object_store)
    killed = run_genbuf(
        ["offload-compacted"], {**stack.env, "GENBUFFER_CRASH_AT": "after_upload"}, faults=True
    )
    assert killed.returncode == -9
    assert len(objects(stack)) == 1
    assert all(
        (row := stack.repository.get_generation(gen)) is not None
        and "offloaded" not in row.metadata
        for gen in pushed
    )
    refused = stack.cli("offload-compacted", "--json")
    assert json.loads(refused.stdout)["already_running"], refused.output
    expire_lease(stack, "offload-compacted")  # JOB_LEASE_TTL after the kill
    rerun = stack.cli("offload-compacted", "--json")
    assert rerun.exit_code == 0, rerun.output
    assert "took over the lease" in rerun.stderr
    assert json.loads(rerun.stdout)["offloaded"] == 2 and len(objects(stack)) == 2
    purged = run_genbuf(["purge-objects", "--grace", "0s", "--json"], stack.env)
    assert json.loads(purged.stdout)["deleted"] == 0


def test_a_changed_object_is_refused_on_read_back(servers: Stack, tmp_path: Path) -> None:
    """An object whose bytes no longer hash to the recorded sha256: exit 1, and
    --output leaves no file behind."""
    stack = offloading(servers, {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"})
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"z" * 5000])
    assert compact(stack, ORG, gen).persisted
    (path,) = [found for found in (tmp_path / "objects").rglob("*") if found.is_file()]
    path.write_bytes(b"z" * 4999 + b"!")
    out = tmp_path / "out.bin"
    done = run_genbuf(["show-generation", str(ORG), str(gen), "-o", str(out)], stack.env)
    assert done.returncode == 1 and "hash to" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists() and list(tmp_path.glob(".out.bin.*")) == []
    path.unlink()
    gone = run_genbuf(["show-generation", str(ORG), str(gen)], stack.env)
    assert gone.returncode == 1 and "not found" in gone.stderr


def test_past_the_parse_limit_an_artifact_is_checked_as_it_streams(
    embedded: Stack, tmp_path: Path
) -> None:
    """Past GENERATION_PARSE_MAX_BYTES: no llm_response, its Content-Type by what the
    stream showed (JSON, text, bytes); a bad byte is an invalid_utf8 error at its offset;
    with a JSON Schema, a json_unchecked warning."""
    stack = offloading(
        embedded,
        {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"},
        GENERATION_PARSE_MAX_BYTES="1000",
    )
    json_gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, json_gen, json_chunks(40))
    assert compact(stack, ORG, json_gen).ok
    row = stack.repository.get_generation(json_gen)
    assert row is not None and row.llm_response is None
    assert row.metadata["offloaded"]["content_type"] == "application/json"
    assert "validation_errors" not in row.metadata
    text_gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, text_gen, [b"plain text " * 500])
    assert compact(stack, ORG, text_gen).persisted
    row = stack.repository.get_generation(text_gen)
    assert row is not None
    assert row.metadata["offloaded"]["content_type"] == "text/plain; charset=utf-8"

    bad_gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, bad_gen, [b"a" * 3000, b"\xff", b"b" * 3000])
    result = compact(stack, ORG, bad_gen)
    assert result.persisted
    assert [i["code"] for i in result.issues] == ["invalid_utf8"]
    assert "at byte 3000" in result.issues[0]["message"]
    row = stack.repository.get_generation(bad_gen)
    assert row is not None
    assert row.metadata["offloaded"]["content_type"] == "application/octet-stream"

    schema_gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, schema_gen, json_chunks(40))
    result = compact(stack, ORG, schema_gen, config={"schema": {"type": "array"}})
    assert [(i["code"], i["severity"]) for i in result.issues] == [("json_unchecked", "warning")]


def test_an_unreachable_store_is_exit_3_and_the_buffer_stays(servers: Stack) -> None:
    """S3 refusing connections: one line, exit 3; nothing persisted, the buffer intact."""
    stack = offloading(
        servers,
        {
            "GENERATION_OFFLOAD_URL": "s3://nowhere/artifacts",
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ACCESS_KEY_ID": "x",
            "AWS_SECRET_ACCESS_KEY": "y",
            "AWS_DEFAULT_REGION": "us-east-1",
        },
    )
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, json_chunks(50))
    done = run_genbuf(["compact-generation", str(ORG), str(gen), "--delete"], stack.env)
    assert done.returncode == 3, done.stderr
    assert "object store" in done.stderr and "Traceback" not in done.stderr
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted is None
    assert stack.buffer.keyspace.list_length(stack.buffer.key_for(ORG, gen, None)) > 0


def test_memory_store_is_refused_outside_one_process(servers: Stack) -> None:
    """memory:// would leave rows pointing at objects gone with the process."""
    servers.env.update(GENERATION_OFFLOAD_URL="memory://", GENERATION_OFFLOAD_BYTES="10")
    gen = servers.repository.create_generation(ORG)
    done = run_genbuf(["compact-generation", str(ORG), str(gen)], servers.env)
    assert done.returncode == 2 and "memory://" in done.stderr


def test_laravel_aws_settings_are_read_as_they_are(tmp_path: Path) -> None:
    """An app's .env with Laravel's AWS_* names gives obstore's S3 configuration."""
    env = tmp_path / ".env"
    env.write_text(
        "AWS_ACCESS_KEY_ID=AKIA123\nAWS_SECRET_ACCESS_KEY=secret\nAWS_DEFAULT_REGION=eu-west-3\n"
        "AWS_BUCKET=app-bucket\nAWS_ENDPOINT=http://minio:9000\nAWS_USE_PATH_STYLE_ENDPOINT=true\n"
        "GENERATION_OFFLOAD_URL=s3:///generations\nGENERATION_OFFLOAD_BYTES=1048576\n"
    )
    settings = Settings(_env_file=env)  # type: ignore[call-arg]
    assert s3_config(settings) == {
        "access_key_id": "AKIA123",
        "secret_access_key": "secret",
        "region": "eu-west-3",
        "endpoint": "http://minio:9000",
        "virtual_hosted_style_request": False,
    }
    store = open_store("s3:///generations", settings)
    assert store.url == "s3://app-bucket/generations"  # rows name the bucket they are in
    assert store.url_of("org-1/gen-2/ab") == "s3://app-bucket/generations/org-1/gen-2/ab"
    assert settings.offload_enabled()


def _blocks(data: bytes, size: int) -> Iterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_object_names_are_the_content_hash(tmp_path: Path) -> None:
    """The name pattern purge-objects recognises is the one uploads write."""
    store = open_store(f"file://{tmp_path}", None)
    data = b"hello " * 1000
    record = upload(
        store,
        7,
        8,
        _blocks(data, 100),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        compression="zstd",
        content_type="text/plain",
    )
    (path,) = [found.path for found in store.objects()]
    match = OBJECT_PATH.match(path)
    assert match is not None and match.groups()[:3] == ("7", "8", hashlib.sha256(data).hexdigest())
    assert record.url == store.url_of(path) and record.stored_bytes < len(data)


def test_a_row_changed_outside_genbuf_is_not_followed(embedded: Stack, tmp_path: Path) -> None:
    """A URL in `compacted` that metadata.offloaded does not name is not genbuf's: the
    compaction refuses to append to it."""
    stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'o'}"})
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"q" * 5000])
    assert compact(stack, ORG, gen).persisted
    with stack.repository.engine.begin() as connection:
        connection.execute(update(GEN).where(GEN.c.id == gen).values(compacted="s3://elsewhere/x"))
    stack.buffer.push_many(ORG, gen, [b"more"])
    with pytest.raises(ForeignArtifact, match=r"not valid base64"):
        assemble_and_persist(
            CompactionRequest(ORG, gen),
            buffer=stack.buffer,
            repository=stack.repository,
            config=stack.config(),
        )


def test_a_small_zstd_frame_decompresses_in_bounded_blocks(tmp_path: Path) -> None:
    """5 MiB that compress to a few hundred bytes come back 1 MiB at a time, not whole."""
    store = open_store(f"file://{tmp_path}", None)
    data = b"a" * (5 * 1024 * 1024)
    record = upload(
        store,
        1,
        2,
        iter([data]),
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        compression="zstd",
        content_type="text/plain",
    )
    path = store.path_of(record.url)
    assert path is not None and record.stored_bytes < 4096
    blocks = list(read_verified(store, path, record))
    assert b"".join(blocks) == data
    assert len(blocks) >= 5 and max(map(len, blocks)) <= OUTPUT_BLOCK


def test_the_utf8_check_finds_a_bad_byte_across_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    """A character split across pages and slices is fine; a bad byte is found at its
    offset, whatever slice it falls in."""
    monkeypatch.setattr(scan_module, "UTF8_SLICE", 3)
    text = "añb€c".encode()
    pages = [[text[:2]], [text[2:5], text[5:]]]
    scanned = scan_module.scan(
        [], pages, keep=0, tail_chunks=8, stop_past_keep=False, check_utf8=True
    )
    assert scanned.utf8_error is None and scanned.size == len(text)
    bad = text[:4] + b"\xc3(" + text[4:]
    scanned = scan_module.scan(
        [bad[:3]], [[bad[3:]]], keep=0, tail_chunks=8, stop_past_keep=False, check_utf8=True
    )
    assert scanned.utf8_error is not None and scanned.utf8_error.endswith("at byte 4")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rounds=st.lists(
        st.lists(st.binary(min_size=1, max_size=700), min_size=0, max_size=12),
        min_size=1,
        max_size=4,
    ),
    threshold=st.integers(min_value=1, max_value=3000),
    compression=st.sampled_from(["none", "zstd"]),
)
def test_whatever_the_rounds_the_row_reads_back_every_chunk_once(
    tmp_path_factory: pytest.TempPathFactory,
    rounds: list[list[bytes]],
    threshold: int,
    compression: str,
) -> None:
    """Pushes and compactions in rounds, the artifact crossing the threshold or not: the
    artifact is always every chunk pushed, once, in order; once offloaded it stays so,
    and its object is named after its sha256; an orphan purge leaves exactly that one."""
    tmp_path = tmp_path_factory.mktemp("rounds")
    stack = _embedded_stack(tmp_path)
    try:
        offloading(
            stack,
            {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"},
            GENERATION_OFFLOAD_BYTES=str(threshold),
            GENERATION_OFFLOAD_COMPRESSION=compression,
        )
        gen = stack.repository.create_generation(ORG)
        pushed: list[bytes] = []
        was_offloaded = False
        for chunks in rounds:
            if chunks:
                stack.buffer.push_many(ORG, gen, chunks)
                pushed += chunks
            if not pushed:
                continue
            compact(stack, ORG, gen)
            row = stack.repository.get_generation(gen)
            assert row is not None
            data, facts = read_artifact(
                stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
            )
            assert data == b"".join(pushed)
            offloaded = "offloaded" in row.metadata
            assert offloaded == (was_offloaded or len(data) > threshold)
            was_offloaded = offloaded
            if offloaded:
                digest = hashlib.sha256(data).hexdigest()
                assert row.compacted is not None and digest in row.compacted
                assert facts.offloaded == row.compacted
        if was_offloaded:
            done = stack.cli("purge-objects", "--grace", "0", "--json")
            assert done.exit_code == 0, done.output
            assert len(objects(stack)) == 1
    finally:
        stack.close()


def test_compact_pending_offloads_in_parallel(servers: Stack, s3_server: S3Server) -> None:
    """compact-pending's concurrent compactions share one store client: every large
    finished buffer ends in its own object, every small one in its row."""
    stack = offloading(servers, s3_server.env(s3_server.create_bucket()))
    pushed: dict[int, bytes] = {}
    for count in (40, 2, 45, 50, 3, 55, 60, 65):
        gen = stack.repository.create_generation(ORG)
        chunks = json_chunks(count)
        stack.buffer.push_many(ORG, gen, chunks)
        stack.buffer.finish(ORG, gen)
        pushed[gen] = b"".join(chunks)
    done = run_genbuf(["compact-pending", "--workers", "4", "--json"], stack.env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["compacted"] == len(pushed)
    large = {gen for gen, data in pushed.items() if len(data) > THRESHOLD}
    assert len(large) == 6 and len(objects(stack)) == 6
    for gen, data in pushed.items():
        row = stack.repository.get_generation(gen)
        assert row is not None and ("offloaded" in row.metadata) == (gen in large)
        got, _ = read_artifact(
            stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
        )
        assert got == data


def test_a_missing_bucket_is_a_usage_error_and_nothing_is_lost(
    servers: Stack, s3_server: S3Server
) -> None:
    """A bucket that does not exist: exit 2, one line naming what to fix; the row and
    the buffer stay as they were."""
    stack = offloading(servers, s3_server.env("genbuf-no-such-bucket"))
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, json_chunks(50))
    done = run_genbuf(["compact-generation", str(ORG), str(gen), "--delete"], stack.env)
    assert done.returncode == 2, done.stderr
    assert "create the bucket" in done.stderr and "Traceback" not in done.stderr
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted is None
    assert stack.buffer.keyspace.list_length(stack.buffer.key_for(ORG, gen, None)) > 0


def test_bytes_too_many_to_hold_while_scanning_are_read_again(
    embedded: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streamed scan holds SCAN_KEEP bytes: an artifact past it but under the threshold
    is read again into its row (backups and llm_response as ever); one over the threshold
    but under PARSE_LIMIT is read again to be parsed; bytes that changed in between are
    a StreamChanged, not a wrong artifact."""
    monkeypatch.setattr("genbuffer.compaction.validate.SCAN_KEEP", 100)
    stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"})
    in_row = stack.repository.create_generation(ORG)
    chunks = json_chunks(10)
    stack.buffer.push_many(ORG, in_row, chunks)
    assert 100 < len(b"".join(chunks)) <= THRESHOLD
    assert compact(stack, ORG, in_row).persisted
    row = stack.repository.get_generation(in_row)
    assert row is not None and "offloaded" not in row.metadata
    assert row.llm_response == json.loads(b"".join(chunks))
    assert stack.repository.backups(in_row) == chunks

    parsed = stack.repository.create_generation(ORG)
    chunks = json_chunks(60)
    stack.buffer.push_many(ORG, parsed, chunks)
    assert compact(stack, ORG, parsed).persisted
    row = stack.repository.get_generation(parsed)
    assert row is not None and "offloaded" in row.metadata
    assert row.llm_response == json.loads(b"".join(chunks))

    scanned = scan_module.scan(
        [], [[b"abc", b"def"]], keep=2, tail_chunks=8, stop_past_keep=False, check_utf8=True
    )
    assert scanned.content is None
    again = scan_module.collected(scanned, [], [[b"abc", b"def"]])
    assert (again.content, again.sizes) == (b"abcdef", (3, 3))
    with pytest.raises(StreamChanged):
        scan_module.collected(scanned, [], [[b"abc", b"deF"]])


@pytest.mark.slow
def test_compactions_killed_at_random_moments_lose_nothing(
    servers: Stack, s3_server: S3Server
) -> None:
    """kill -9 at random moments of offloading compactions (scanning, uploading,
    committing), chunks arriving in between, then a last clean run: every row reads
    back every chunk pushed, once, verified; no row points at a missing object; after
    purge-objects exactly one object per row is left."""
    stack = offloading(
        servers,
        s3_server.env(s3_server.create_bucket()),
        GENERATION_OFFLOAD_BYTES="65536",
        GENERATION_OFFLOAD_COMPRESSION="zstd",
    )
    rng = random.Random(14)
    pushed: dict[int, list[bytes]] = {}
    for _ in range(4):
        gen = stack.repository.create_generation(ORG)
        pushed[gen] = json_chunks(400, size=1000)
        stack.buffer.push_many(ORG, gen, pushed[gen])
    kills = 0
    for _ in range(12):
        gen = rng.choice(list(pushed))
        proc = spawn_genbuf(["compact-generation", str(ORG), str(gen)], stack.env)
        try:  # killed at a random moment of its run, unless it ended before
            proc.wait(timeout=rng.uniform(0.05, 0.8))
        except subprocess.TimeoutExpired:
            proc.kill()
            kills += 1
        proc.communicate(timeout=60)
        more = [f'"more {rng.random()}"'.encode()]
        stack.buffer.push_many(ORG, gen, more)
        pushed[gen] += more
    assert kills >= 3  # the schedule above kills most runs mid-way
    for gen, chunks in pushed.items():
        done = run_genbuf(["compact-generation", str(ORG), str(gen), "--delete"], stack.env)
        assert done.returncode == 0, done.stderr
        shown = run_genbuf(["show-generation", str(ORG), str(gen), "--json"], stack.env)
        assert shown.returncode == 0, shown.stderr
        data, _ = read_artifact(
            stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
        )
        assert data == b"".join(chunks)
    purged = run_genbuf(["purge-objects", "--grace", "0", "--json"], stack.env)
    assert purged.returncode == 0, purged.stderr
    assert len(objects(stack)) == len(pushed)


def test_purge_objects_runs_are_recorded_for_doctor_and_metrics(
    servers: Stack, tmp_path: Path
) -> None:
    """With offloading on, doctor expects purge-objects to have run: a warning until it
    has, ok after; each run (not a dry one) is recorded and written to a textfile."""
    stack = offloading(servers, {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"})
    before = json.loads(run_genbuf(["doctor", "--json"], stack.env).stdout)
    check = next(c for c in before["checks"] if c["name"] == "cron purge-objects")
    assert check["status"] == "warn" and "schedule" in check["hint"]
    dry = run_genbuf(["purge-objects", "--dry-run", "--json"], stack.env)
    assert dry.returncode == 0, dry.stderr
    assert stack.repository.observations.last_runs(("purge-objects",))["purge-objects"][0] is None
    textfile = tmp_path / "purge-objects.prom"
    done = run_genbuf(["purge-objects", "--metrics-textfile", str(textfile)], stack.env)
    assert done.returncode == 0, done.stderr
    last, ok = stack.repository.observations.last_runs(("purge-objects",))["purge-objects"]
    assert last is not None and ok
    assert 'job="purge-objects"' in textfile.read_text()
    after = json.loads(run_genbuf(["doctor", "--json"], stack.env).stdout)
    check = next(c for c in after["checks"] if c["name"] == "cron purge-objects")
    assert check["status"] == "ok"
    metrics = run_genbuf(["metrics"], stack.env)
    assert 'genbuf_last_success_timestamp_seconds{job="purge-objects",source="database"}' in (
        metrics.stdout
    )


# -- purge-objects compares canonical locations (issue 21, item 5) ----------------------


def _offloaded_generations(stack: Stack, count: int) -> dict[int, bytes]:
    """``count`` generations compacted into the stack's store; their bytes."""
    pushed = {}
    for index in range(count):
        gen = stack.repository.create_generation(ORG)
        chunks = [bytes([97 + index]) * (THRESHOLD + 1)]
        stack.buffer.push_many(ORG, gen, chunks)
        assert compact(stack, ORG, gen, delete=True).persisted
        pushed[gen] = b"".join(chunks)
    return pushed


def _respell_rows(stack: Stack, old: str, new: str) -> None:
    """Rows as today's main wrote them under another spelling of the store's URL."""
    with stack.repository.engine.begin() as connection:
        for gen, compacted, metadata in connection.execute(
            select(GEN.c.id, GEN.c.compacted, GEN.c.metadata)
        ).all():
            if compacted is None or not compacted.startswith(old):
                continue
            url = new + compacted[len(old) :]
            offloaded = {**metadata["offloaded"], "url": url}
            connection.execute(
                update(GEN)
                .where(GEN.c.id == gen)
                .values(compacted=url, metadata={**metadata, "offloaded": offloaded})
            )


def _spellings(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """(canonical URL, another spelling of it) of the store, by what differs."""
    objs = tmp_path / "srv" / "objs"
    canonical = f"file://{objs}"
    return {
        "localhost": (canonical, f"file://localhost{objs}"),
        "double slash": (canonical, f"file://{objs.parent}//objs"),
        "dot": (canonical, f"file://{objs.parent}/./objs"),
        "four slashes": (canonical, f"file:///{objs}"),
        "s3 double slash": ("s3://{bucket}/art", "s3://{bucket}//art"),
    }


@pytest.mark.parametrize(
    "spelling",
    ["localhost", "double slash", "dot", "four slashes", "s3 double slash"],
)
@pytest.mark.parametrize("written_under", ["canonical", "spelled"])
def test_purge_objects_keeps_what_rows_name_under_any_spelling(
    embedded: Stack, tmp_path: Path, s3_server: S3Server, spelling: str, written_under: str
) -> None:
    """Rows written under one spelling of the store's URL, GENERATION_OFFLOAD_URL later
    spelled another way (either way round): purge-objects deletes only the true orphan,
    and every row reads back. Today every object is taken for an orphan and deleted."""
    canonical, spelled = _spellings(tmp_path)[spelling]
    if spelling.startswith("s3"):
        env = s3_server.env(s3_server.create_bucket())
        bucket = env["GENERATION_OFFLOAD_URL"].split("/")[2]
        canonical, spelled = canonical.format(bucket=bucket), spelled.format(bucket=bucket)
        embedded.env.update(env)
    stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": canonical})
    pushed = _offloaded_generations(stack, 2)
    orphan = f"org-{ORG}/gen-{max(pushed)}/{'ee' * 32}"
    store_of(stack).put(orphan, [b"never committed"], "text/plain")
    if written_under == "spelled":
        _respell_rows(stack, canonical, spelled.rstrip("/"))
    else:
        stack.env["GENERATION_OFFLOAD_URL"] = spelled
    done = stack.cli("purge-objects", "--grace", "0s", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert (summary["objects"], summary["referenced"], summary["deleted"]) == (3, 2, 1)
    assert orphan not in objects(stack)
    for gen, data in pushed.items():
        shown = stack.cli("show-generation", str(ORG), str(gen))
        assert shown.exit_code == 0, shown.output
        assert shown.stdout_bytes == data


def test_purge_objects_refuses_a_store_that_no_row_names(embedded: Stack, tmp_path: Path) -> None:
    """Rows name objects in one store, GENERATION_OFFLOAD_URL names another that holds
    objects: nothing is deleted, exit 2, naming both (dry run too). Today the other
    store's objects are all deleted as orphans."""
    first = f"file://{tmp_path / 'first'}"
    stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": first})
    _offloaded_generations(stack, 2)
    names = objects(stack)
    second = f"file://{tmp_path / 'second'}"
    stack.env["GENERATION_OFFLOAD_URL"] = second
    for name in names:  # the same names: what a restore or a copy leaves there
        store_of(stack).put(name, [b"copied"], "text/plain")
    for dry in ([], ["--dry-run"]):
        done = stack.cli("purge-objects", "--grace", "0s", *dry)
        assert done.exit_code == 2, done.output
        assert first in done.stderr and second in done.stderr
        assert "GENERATION_OFFLOAD_URL" in done.stderr
    assert objects(stack) == names


def test_purge_objects_keeps_the_object_a_copied_row_names(
    stack: Stack, object_store: dict[str, str]
) -> None:
    """The app copies a row (insert … select) and deletes the original: the copy names the
    original's object, which purge-objects keeps. Today only the row whose id is in the
    object's name is asked, and the object is deleted. genbuf does not read the copy's
    artifact (its name carries another generation): refused, exit 4."""
    offloading(stack, object_store)
    (gen,) = _offloaded_generations(stack, 1)
    copied = ("organization_id", "scenario_id", "llm_response", "metadata", "compacted")
    with stack.repository.engine.begin() as connection:
        connection.execute(
            GEN.insert().from_select(
                list(copied), select(*(GEN.c[name] for name in copied)).where(GEN.c.id == gen)
            )
        )
        copy = connection.execute(select(func.max(GEN.c.id))).scalar_one()
        connection.execute(GEN.delete().where(GEN.c.id == gen))
    before = objects(stack)
    done = stack.cli("purge-objects", "--grace", "0s", "--json")
    assert done.exit_code == 0, done.output
    summary = json.loads(done.stdout)
    assert (summary["referenced"], summary["deleted"]) == (1, 0)
    assert objects(stack) == before
    shown = stack.cli("show-generation", str(ORG), str(copy))
    assert shown.exit_code == 4 and "refused" in shown.stderr


# -- the stores genbuf may read, and how it writes to a directory (issue 22) ---------------


def test_an_earlier_store_is_read_only_once_listed(embedded: Stack, tmp_path: Path) -> None:
    """GENERATION_OFFLOAD_URL moved to a new store: a row of the old one is refused (exit 4,
    the hint names GENERATION_OFFLOAD_READ_URLS) until the old store is listed there; then
    it reads back, and new chunks continue it into the new store (the old object is left
    alone, purge-objects of the new store deletes nothing). Today it is read whatever the
    settings say."""
    old, new = f"file://{tmp_path / 'old'}", f"file://{tmp_path / 'new'}"
    stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": old})
    ((gen, data),) = _offloaded_generations(stack, 1).items()
    old_objects = objects(stack)
    stack.env["GENERATION_OFFLOAD_URL"] = new
    refused = stack.cli("show-generation", str(ORG), str(gen))
    assert refused.exit_code == 4, refused.output
    assert "GENERATION_OFFLOAD_READ_URLS" in refused.stderr and refused.stdout == ""
    stack.env["GENERATION_OFFLOAD_READ_URLS"] = f"file:///nowhere, {old}/"
    shown = stack.cli("show-generation", str(ORG), str(gen))
    assert shown.exit_code == 0, shown.output
    assert shown.stdout_bytes == data
    stack.buffer.push_many(ORG, gen, [b"more"])
    assert compact(stack, ORG, gen, delete=True).persisted
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted is not None and row.compacted.startswith(new + "/")
    got, _ = read_artifact(
        stack.repository, stack.buffer, ORG, gen, Offload.from_settings(stack.settings)
    )
    assert got == data + b"more"
    purged = json.loads(stack.cli("purge-objects", "--grace", "0s", "--json").stdout)
    assert purged["deleted"] == 0 and purged["referenced"] == 1
    stack.env["GENERATION_OFFLOAD_URL"] = old
    assert objects(stack) == old_objects


def _modes(path: Path) -> tuple[int, int]:
    found = path.stat()
    return found.st_mode & 0o777, found.st_gid


def test_objects_in_a_directory_are_owner_only(embedded: Stack, tmp_path: Path) -> None:
    """A fresh file:// store: its directory, each object's directories 0700, the object
    0600 (whatever the umask); with GENERATION_OFFLOAD_FILE_GROUP 0750 / 0640 in that
    group, offload-compacted alike. Today 0755 / 0644 under the usual umask."""
    previous = os.umask(0o022)
    try:
        root = tmp_path / "objects"
        stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": f"file://{root}"})
        (gen,) = _offloaded_generations(stack, 1)
        (name,) = objects(stack)
        assert _modes(root)[0] == 0o700
        assert _modes(root / f"org-{ORG}")[0] == 0o700
        assert _modes(root / f"org-{ORG}" / f"gen-{gen}")[0] == 0o700
        assert _modes(root / name)[0] == 0o600

        group = grp.getgrgid(os.getgid()).gr_name
        shared = tmp_path / "shared"
        stack.env.update(
            GENERATION_OFFLOAD_URL=f"file://{shared}", GENERATION_OFFLOAD_FILE_GROUP=group
        )
        small = stack.repository.create_generation(ORG)
        stack.buffer.push_many(ORG, small, [b"s" * (THRESHOLD + 10)])
        assert compact(stack, ORG, small, config={"offload": Offload()}).persisted  # in its row
        done = stack.cli("offload-compacted", "--json")
        assert done.exit_code == 0 and json.loads(done.stdout)["offloaded"] == 1, done.output
        (moved,) = [p for p in shared.rglob("*") if p.is_file()]
        assert _modes(shared) == (0o750, os.getgid())
        assert _modes(moved.parent) == (0o750, os.getgid())
        assert _modes(moved) == (0o640, os.getgid())
    finally:
        os.umask(previous)


def test_doctor_warns_when_a_directory_store_is_open_to_everyone(
    servers: Stack, tmp_path: Path
) -> None:
    """A world-writable (or -readable) store, or a world-writable parent: doctor warns,
    naming the directory and the chmod that fixes it; owner-only: ok."""
    root = tmp_path / "objects"
    stack = offloading(servers, {"GENERATION_OFFLOAD_URL": f"file://{root}"})
    root.mkdir(mode=0o700)
    root.chmod(0o777)

    def check() -> dict[str, str]:
        report = json.loads(run_genbuf(["doctor", "--json"], stack.env).stdout)
        return next(c for c in report["checks"] if c["name"] == "object store permissions")

    loose = check()
    assert loose["status"] == "warn", loose
    assert f"{root} is world-readable and -writable" in loose["message"]
    assert "chmod 700" in loose["hint"]
    root.chmod(0o700)
    assert check()["status"] == "ok"
    tmp_path.chmod(0o777)
    try:
        assert "parent" in check()["message"]
    finally:
        tmp_path.chmod(0o700)


def test_doctor_creates_no_store_directory(embedded: Stack, tmp_path: Path) -> None:
    """doctor writes nothing: a file:// store that does not exist yet stays missing, and
    doctor warns with the mkdir that makes it (the first offload would create it 0700)."""
    root = tmp_path / "not-yet" / "objects"
    stack = offloading(embedded, {"GENERATION_OFFLOAD_URL": f"file://{root}"})
    result = stack.cli("doctor", "--json")
    check = next(c for c in json.loads(result.stdout)["checks"] if c["name"] == "object store")
    assert check["status"] == "warn", check
    assert f"the directory {root} does not exist" in check["message"]
    assert f"mkdir -m 700 {root}" in check["hint"]
    assert not root.parent.exists()


def _broken(chunks: list[bytes]) -> list[bytes]:
    """``chunks`` of a JSON document with one byte in the middle made invalid."""
    middle = len(chunks) // 2
    return [*chunks[:middle], b"\x01" + chunks[middle][1:], *chunks[middle + 1 :]]


@pytest.mark.parametrize("placement", ["in the row", "offloaded"])
def test_the_parse_limit_and_strict_mode_hold_wherever_the_bytes_live(
    embedded: Stack, tmp_path: Path, placement: str
) -> None:
    """GENERATION_PARSE_MAX_BYTES decides llm_response alike in the row and offloaded;
    past it, invalid JSON is still invalid_json (soft: recorded with where it is;
    strict: nothing persisted, the buffer kept)."""
    extra = {"GENERATION_PARSE_MAX_BYTES": "2000"}
    if placement == "offloaded":
        offloading(embedded, {"GENERATION_OFFLOAD_URL": f"file://{tmp_path / 'objects'}"})
    embedded.env.update(extra)
    stack = embedded
    small, large = json_chunks(5), json_chunks(40)
    assert len(b"".join(small)) <= 2000 < THRESHOLD < len(b"".join(large))
    parsed, unparsed = (stack.repository.create_generation(ORG) for _ in range(2))
    stack.buffer.push_many(ORG, parsed, small)
    stack.buffer.push_many(ORG, unparsed, large)
    assert compact(stack, ORG, parsed).ok and compact(stack, ORG, unparsed).ok
    rows = [stack.repository.get_generation(gen) for gen in (parsed, unparsed)]
    assert rows[0] is not None and rows[0].llm_response == json.loads(b"".join(small))
    assert rows[1] is not None and rows[1].llm_response is None
    assert ("offloaded" in rows[1].metadata) == (placement == "offloaded")

    strict = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, strict, _broken(large))
    aborted = compact(stack, ORG, strict, strict=True)
    assert not aborted.ok and not aborted.persisted and aborted.validation_id is not None
    assert [i["code"] for i in aborted.issues] == ["invalid_json"]
    row = stack.repository.get_generation(strict)
    assert row is not None and row.compacted is None
    assert stack.buffer.keyspace.list_length(stack.buffer.key_for(ORG, strict, None)) > 0

    soft = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, soft, _broken(large))
    recorded = compact(stack, ORG, soft)
    assert recorded.persisted and [i["code"] for i in recorded.issues] == ["invalid_json"]
    stopped = b"".join(_broken(large)).index(b"\x01")  # yajl stops before the control byte
    assert recorded.issues[0]["message"].endswith(f"(near byte {stopped})")
    row = stack.repository.get_generation(soft)
    assert row is not None and row.metadata["validation_errors"] == recorded.issues


def test_a_10_mb_invalid_artifact_offloaded_under_strict_is_refused(
    redis_stack: Stack, tmp_path: Path
) -> None:
    """The report's case: 10 MB of invalid JSON, offloaded, past the default 8 MiB
    parse limit: `compact-generation --strict` exits 1, no row, no object."""
    objects_dir = tmp_path / "objects"
    stack = offloading(redis_stack, {"GENERATION_OFFLOAD_URL": f"file://{objects_dir}"})
    gen = stack.repository.create_generation(ORG)
    line = b'{"token": "' + b"y" * 1000 + b'"}\n'  # JSON lines: not one JSON document
    stack.buffer.push_many(ORG, gen, [line] * (10_000_000 // len(line)))
    done = stack.cli("compact-generation", str(ORG), str(gen), "--strict", "--json")
    assert done.exit_code == 1, done.output
    body = json.loads(done.stdout)
    assert not body["persisted"] and [i["code"] for i in body["issues"]] == ["invalid_json"]
    assert "trailing garbage" in body["issues"][0]["message"]
    row = stack.repository.get_generation(gen)
    assert row is not None and row.compacted is None
    assert not objects_dir.exists() or not any(p.is_file() for p in objects_dir.rglob("*"))
