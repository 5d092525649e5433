"""`make demo`: the whole genbuffer flow on the embedded defaults, for a person to read.

No servers: Redis is an in-process fakeredis (REDIS_URL=memory://demo) and the
database a SQLite file under storage/demo/. The genbuf commands run in this one
process, exactly as an operator would type them.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.panel import Panel
from rich.table import Table

if TYPE_CHECKING:
    from genbuffer import GenerationBuffer, Repository

DEMO_DIR = Path("storage/demo")
ENV = {
    "REDIS_URL": "memory://demo",
    "DATABASE_URL": f"sqlite:///{DEMO_DIR / 'genbuffer.sqlite3'}",
    "METADATA_VALIDATION_LOG": str(DEMO_DIR / "metadata-validation.log"),
}
console = Console(highlight=False, width=max(100, shutil.get_terminal_size().columns))

LLM_RESPONSE = {
    "scenario": "Expansión a Lisboa",
    "summary": "Abrir una oficina en 2027 con 12 personas 🚀",
    "steps": [
        {"quarter": "Q1", "action": "Registrar la sociedad", "cost_eur": 18000},
        {"quarter": "Q2", "action": "Contratar al equipo inicial", "cost_eur": 240000},
        {"quarter": "Q3", "action": "Primeros clientes", "cost_eur": 35000.5},
    ],
    "confidence": 0.82,
}


def genbuf(*args: str, expect: int = 0) -> None:
    """Run one genbuf command in-process and show it as a shell line."""
    from genbuffer.cli import app  # noqa: PLC0415  (after the environment is set)

    console.print(f"\n[bold cyan]$ genbuf {shlex.join(args)}[/bold cyan]")
    code = app(list(args), standalone_mode=False) or 0
    marker = "[green]" if code == expect else "[red]"
    console.print(f"{marker}(exit {code})[/]")
    if code != expect:
        raise SystemExit(f"demo: genbuf {' '.join(args)} exited {code}, expected {expect}")


def stream_chunks(text: str, size: int) -> list[bytes]:
    """Cut a response into small chunks the way a token stream arrives (mid-character too)."""
    data = text.encode()
    return [data[i : i + size] for i in range(0, len(data), size)]


def main() -> None:
    """Run the demo."""
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    os.environ.update(ENV)

    from genbuffer import GenerationBuffer, Repository, load_settings  # noqa: PLC0415

    console.print(Panel("genbuffer demo: LLM stream → Redis buffer → compaction → database"))
    console.print("settings: " + ", ".join(f"{k}={v}" for k, v in ENV.items()))
    genbuf("db", "upgrade")

    settings = load_settings()
    buffer = GenerationBuffer.from_settings(settings)
    repository = Repository.from_settings(settings)
    good = repository.create_generation(12, scenario_id=345, generation_id=59)
    bad = repository.create_generation(12, generation_id=60)
    strict = repository.create_generation(12, generation_id=61)
    console.print(
        f"\nthe app created generation rows {good}, {bad} and {strict} for organization 12"
    )

    text = json.dumps(LLM_RESPONSE, ensure_ascii=False, indent=2)
    chunks = stream_chunks(text, 9)
    for seq, chunk in enumerate(chunks):
        buffer.push_chunk(12, good, chunk, scenario_id=345, seq=seq)
    buffer.finish(12, good, scenario_id=345)
    console.print(
        f"\nLLM streamed generation {good}: {len(chunks)} chunks of 9 bytes, e.g. "
        + ", ".join(repr(c) for c in chunks[1:4])
    )
    genbuf("inspect-generation", "12", str(good), "--scenario-id", "345")
    genbuf("compact-generation", "12", str(good), "--delete", "--by", "demo")
    genbuf("inspect-generation", "12", str(good))

    truncated = text[: len(text) // 2]
    buffer.push_many(12, bad, stream_chunks(truncated, 16))
    console.print(f"\ngeneration {bad}: the stream was cut off half way (invalid JSON)")
    genbuf("compact-generation", "12", str(bad), "--soft")

    buffer.push_many(12, strict, stream_chunks(truncated, 16))
    console.print(f"\ngeneration {strict}: the same broken stream, compacted in strict mode")
    genbuf("compact-generation", "12", str(strict), "--strict", expect=1)

    console.print("\n[bold]audit log[/bold] " + ENV["METADATA_VALIDATION_LOG"])
    for line in Path(ENV["METADATA_VALIDATION_LOG"]).read_text().splitlines():
        console.print("  " + line, soft_wrap=True)

    table = Table(
        "id",
        "chunks",
        "bytes",
        "llm_response",
        "last issue",
        "metadata keys",
        title="scenario_generations",
        title_justify="left",
    )
    for gen in (good, bad, strict):
        row = repository.get_generation(gen)
        assert row is not None
        table.add_row(
            str(row.id),
            str(row.chunk_count or "-"),
            str(row.metadata.get("bytes", "-")),
            "set" if row.llm_response is not None else "null",
            str(row.last_validation_issue_id or "-"),
            ", ".join(sorted(row.metadata)) or "-",
        )
    console.print()
    console.print(table)
    row = repository.get_generation(good)
    assert row is not None
    decoded = base64.b64decode(row.compacted or "")
    assert decoded == text.encode(), "compacted must reproduce the stream byte for byte"
    console.print(f"generation {good}: compacted decodes byte-exact to the streamed JSON ✓")
    console.print(f"  llm_response.summary = {row.llm_response['summary']!r}")
    console.print(f"  metadata.sha256      = {row.metadata['sha256']}")
    regenerate(buffer, repository, good, text)
    seeing_it(buffer, good)
    offloaded(buffer, repository)
    genbuf("test-redis-buffer", "--chunks", "25")
    console.print("\n[bold green]demo finished[/bold green]")


def seeing_it(buffer: GenerationBuffer, good: int) -> None:
    """status, validation-report and show-generation on what the demo did."""
    console.print("\nseeing it: buffers by state, the day's validation issues, an artifact back")
    buffer.push_chunk(12, 777, b'{"still": "streaming"')  # a buffer whose row does not exist
    genbuf("status", "--list")
    genbuf("validation-report", "--since", "1d")
    genbuf("show-generation", "12", str(good), "--json")


def offloaded(buffer: GenerationBuffer, repository: Repository) -> None:
    """A large generation goes to an object store (a directory here): the row keeps the URL."""
    objects = (DEMO_DIR / "objects").resolve()
    offload = {
        "GENERATION_OFFLOAD_URL": f"file://{objects}",
        "GENERATION_OFFLOAD_BYTES": "65536",
        "GENERATION_OFFLOAD_COMPRESSION": "zstd",
    }
    os.environ.update(offload)
    console.print(
        "\na large generation, offloaded: " + ", ".join(f"{k}={v}" for k, v in offload.items())
    )
    large = repository.create_generation(12, generation_id=62)
    steps = [{**LLM_RESPONSE["steps"][0], "n": n} for n in range(3000)]
    text = json.dumps({**LLM_RESPONSE, "steps": steps}, ensure_ascii=False)
    buffer.push_many(12, large, stream_chunks(text, 512))
    buffer.finish(12, large)
    genbuf("compact-generation", "12", str(large), "--delete")
    row = repository.get_generation(large)
    assert row is not None and row.compacted is not None
    console.print(f"  compacted = {row.compacted}")
    console.print(f"  metadata.offloaded = {json.dumps(row.metadata['offloaded'])}")
    genbuf("show-generation", "12", str(large), "--json")
    genbuf("purge-objects", "--grace", "0", "--dry-run")


def regenerate(buffer: GenerationBuffer, repository: Repository, good: int, text: str) -> None:
    """The app's job runs again after the compaction: the new stream replaces the artifact."""
    revised = json.dumps({**LLM_RESPONSE, "confidence": 0.9}, ensure_ascii=False)
    buffer.push_many(12, good, stream_chunks(revised, 32), scenario_id=345)
    console.print(f"\nthe app's job ran again: generation {good} was streamed anew")
    genbuf("compact-generation", "12", str(good), "--delete", "--json")
    row = repository.get_generation(good)
    assert row is not None and row.llm_response["confidence"] == 0.9
    (kept,) = repository.history(good)
    assert base64.b64decode(kept["compacted"]) == text.encode()
    console.print(
        f"generation {good}: replaced by the new stream; the first artifact is kept as "
        f"generation_artifact_history {kept['id']} (sha256 {row.metadata['history'][0]['sha256']})"
    )


if __name__ == "__main__":
    main()
