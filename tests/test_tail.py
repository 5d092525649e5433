"""tail: a generation's chunks as they arrive, what compaction trimmed said, nothing there."""

from __future__ import annotations

import json
import os
import select
import subprocess
import threading
from functools import partial
from pathlib import Path

from genbuffer.compaction import Found
from genbuffer.observation.tail import follow_buffer
from tests.conftest import Stack
from tests.helpers import compact
from tests.support.runner import GENBUF, clean_environ, run_genbuf
from tests.support.servers import PrivateRedis
from tests.support.wait import wait_until

ORG = 74
# every byte value, a NUL, a multibyte character split across chunks, no final newline
CHUNKS = [b"\x00\xff binary\n", "é".encode()[:1], "é".encode()[1:] + b"\n", bytes(range(256))]

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def test_tail_follows_a_stream_while_it_is_pushed(servers: Stack) -> None:
    """`genbuf tail --follow` started before the first chunk prints the stream byte for
    byte as it is pushed (each hundred chunks printed before the next are pushed) and
    ends when the producer marks it finished."""
    gen = 4242
    process = subprocess.Popen(
        [GENBUF, "tail", str(ORG), str(gen), "--follow", "--poll", "0.02"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=clean_environ(servers.env),
    )
    assert process.stdout is not None
    output, printed = process.stdout.fileno(), bytearray()

    def caught_up(sent: bytes) -> bool:  # what tail printed so far (read without blocking)
        assert process.poll() is None, "tail ended before the stream did"
        while select.select([output], [], [], 0)[0] and len(printed) < len(sent):
            printed.extend(os.read(output, 1 << 16))
        return bytes(printed) == sent

    sent = b""
    for index in range(300):
        chunk = os.urandom(index % 50) + b"\n"
        servers.buffer.push_chunk(ORG, gen, chunk)
        sent += chunk
        if index % 100 == 99:
            wait_until(partial(caught_up, sent), 30, f"tail to print the first {index + 1} chunks")
    servers.buffer.finish(ORG, gen)
    rest, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert bytes(printed) + rest == sent


def test_tail_skips_what_compaction_trimmed_and_says_so(stack: Stack) -> None:
    """Chunks acknowledged and trimmed are said on stderr; the rest are shown exactly."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"a", b"b", b"c"])
    result = compact(stack, ORG, gen, found=Found(trim_later=True))
    stack.buffer.push_many(ORG, gen, [b"d", b"e"])
    assert result.stream_id is not None
    stack.buffer.protocol.acknowledge(result.key, result.stream_id, result.stream_end, True)
    notes: list[str] = []
    pages = list(follow_buffer(stack.buffer, result.key, follow=False, note=notes.append))
    assert b"".join(b"".join(page) for page in pages) == b"de"
    assert notes and "3 chunks were compacted" in notes[0]
    done = stack.cli("tail", str(ORG), str(gen), "--json")
    assert json.loads(done.stdout)["chunks"] == 2 and "3 chunks" in done.stderr


def test_tail_reads_pages_while_a_compaction_trims(servers: Stack) -> None:
    """A tail racing acknowledgements never repeats, reorders or silently skips a chunk:
    what it shows plus what it says was trimmed is every chunk, once."""
    gen = servers.repository.create_generation(ORG)
    chunks = [f"{i:05d}\n".encode() for i in range(5000)]
    servers.buffer.push_many(ORG, gen, chunks)
    result = compact(servers, ORG, gen, found=Found(trim_later=True))
    assert result.persisted and result.stream_id is not None
    stream = result.stream_id
    stop = threading.Event()

    def trim() -> None:  # acknowledge the committed chunks a few at a time
        for upto in range(0, len(chunks) - 1000, 37):
            if stop.is_set():
                return
            servers.buffer.protocol.acknowledge(result.key, stream, upto, False)

    worker = threading.Thread(target=trim)
    notes: list[str] = []
    worker.start()
    try:
        shown = b"".join(
            b"".join(page)
            for page in follow_buffer(servers.buffer, result.key, follow=False, note=notes.append)
        )
    finally:
        stop.set()
        worker.join()
    numbers = [int(line) for line in shown.splitlines()]
    assert numbers == sorted(set(numbers))  # in order, none twice
    skipped = sum(int(note.split()[0]) for note in notes)
    assert len(numbers) + skipped == len(chunks)
    assert numbers[-1] == len(chunks) - 1


def test_tail_of_nothing(stack: Stack) -> None:
    """No buffer and no --follow: exit 1 with a hint."""
    done = stack.cli("tail", str(ORG), "5")
    assert done.exit_code == 1 and "--follow" in done.stderr


def test_tail_follow_outlives_a_redis_restart(servers: Stack, tmp_path: Path) -> None:
    """Redis killed and started again under `tail --follow` (invariant 14): it exited 3
    at the first failed read (month-long run). It says so in one line, waits for the
    server, and prints the rest of the stream once, ending when it is finished."""
    private = PrivateRedis(tmp_path / "redis")
    private.directory.mkdir()
    private.start()
    env = {**servers.env, "REDIS_URL": private.url}
    gen = 4343
    err = tmp_path / "tail.err"
    with err.open("wb") as errors:
        process = subprocess.Popen(
            [GENBUF, "tail", str(ORG), str(gen), "--follow", "--poll", "0.05"],
            stdout=subprocess.PIPE,
            stderr=errors,
            env=clean_environ(env),
        )
    try:
        assert run_genbuf(["push", str(ORG), str(gen)], env, stdin=b"first\n").returncode == 0
        private.kill()
        wait_until(
            lambda: process.poll() is not None or b"unreachable" in err.read_bytes(),
            30,
            "tail to meet the outage",
        )
        assert process.poll() is None, err.read_text()
        private.start()
        pushed = run_genbuf(["push", str(ORG), str(gen), "--finish"], env, stdin=b"second\n")
        assert pushed.returncode == 0, pushed.stderr
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        private.kill()
    assert process.returncode == 0, err.read_text()
    assert out == b"first\nsecond\n"
    said = err.read_text().splitlines()
    assert len(said) <= 2 and "Traceback" not in err.read_text(), said


def test_tail_follow_says_when_the_buffer_went_before_its_end_was_read(stack: Stack) -> None:
    """The last chunk pushed with --finish, and a worker compacting and deleting the
    buffer before tail's next poll: `tail --follow` ended, exit 0, the last chunks
    missing and nothing said (month-long run: 79 lines of 80 printed). The end is in
    the artifact now: tail says so, naming show-generation."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, [b"a", b"b"])
    key = stack.buffer.key_for(ORG, gen, None)
    notes: list[str] = []
    pages = follow_buffer(stack.buffer, key, follow=True, note=notes.append, sleep=lambda _: None)
    assert next(pages) == [b"a", b"b"]
    stack.buffer.push_many(ORG, gen, [b"c"])
    stack.buffer.finish(ORG, gen)
    assert compact(stack, ORG, gen, delete=True).persisted
    assert list(pages) == []
    assert len(notes) == 1 and "show-generation" in notes[0], notes
