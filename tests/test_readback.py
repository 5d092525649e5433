"""show-generation and tail: an artifact's bytes back, verified; a stream as it arrives."""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import threading
from functools import partial
from pathlib import Path

from sqlalchemy import update

from genbuffer.compaction import Found
from genbuffer.db.rows import GEN
from genbuffer.observation.tail import follow_buffer
from tests.conftest import Stack
from tests.helpers import compact
from tests.support.runner import GENBUF, clean_environ, run_genbuf
from tests.support.wait import wait_until

ORG = 74
# every byte value, a NUL, a multibyte character split across chunks, no final newline
CHUNKS = [b"\x00\xff binary\n", "é".encode()[:1], "é".encode()[1:] + b"\n", bytes(range(256))]

ON_CLUSTER = True  # the `stack` tests run on the real Redis Cluster too (conftest)


def test_show_generation_is_byte_exact_through_a_pipe(servers: Stack, tmp_path: Path) -> None:
    """`genbuf show-generation | cmp - pushed` and --output, as an operator runs them."""
    gen = servers.repository.create_generation(ORG)
    servers.buffer.push_many(ORG, gen, CHUNKS)
    assert compact(servers, ORG, gen, delete=True).persisted
    pushed = tmp_path / "pushed.bin"
    pushed.write_bytes(b"".join(CHUNKS))
    env = clean_environ(servers.env)
    show = subprocess.Popen(
        [GENBUF, "show-generation", str(ORG), str(gen)], stdout=subprocess.PIPE, env=env
    )
    compared = subprocess.run(["cmp", "-", str(pushed)], stdin=show.stdout, check=False)
    assert show.wait() == 0 and compared.returncode == 0
    out = tmp_path / "artifact.bin"
    done = run_genbuf(
        ["show-generation", str(ORG), str(gen), "--output", str(out), "--json"], servers.env
    )
    assert done.returncode == 0, done.stderr
    facts = json.loads(done.stdout)
    assert out.read_bytes() == pushed.read_bytes()
    assert (
        facts["sha256"]
        == hashlib.sha256(pushed.read_bytes()).hexdigest()
        == facts["sha256_recorded"]
    )
    assert (facts["bytes"], facts["chunk_count"], facts["verified"]) == (
        len(pushed.read_bytes()),
        4,
        True,
    )
    assert facts["buffer_in_redis"] is False and facts["output"] == str(out)


def test_show_generation_refuses_bytes_that_do_not_match(stack: Stack) -> None:
    """A `compacted` changed outside genbuf: exit 1, nothing on stdout."""
    gen = stack.repository.create_generation(ORG)
    stack.buffer.push_many(ORG, gen, CHUNKS)
    assert compact(stack, ORG, gen).persisted
    with stack.repository.engine.begin() as connection:
        connection.execute(update(GEN).where(GEN.c.id == gen).values(compacted="dGFtcGVyZWQ="))
    done = stack.cli("show-generation", str(ORG), str(gen))
    assert done.exit_code == 1 and done.stdout == ""
    assert "compaction recorded" in done.stderr


def test_show_generation_without_an_artifact(stack: Stack) -> None:
    """No such row, another organization's row, or no artifact yet: exit 1 with a hint."""
    gen = stack.repository.create_generation(ORG)
    missing = stack.cli("show-generation", str(ORG), "999999")
    assert missing.exit_code == 1 and "no generation 999999" in missing.stderr
    other = stack.cli("show-generation", str(ORG + 1), str(gen))
    assert other.exit_code == 1
    pending = stack.cli("show-generation", str(ORG), str(gen), "--json")
    assert (
        pending.exit_code == 1
        and "compact-generation" in json.loads(pending.stdout)["error"]["hint"]
    )


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
