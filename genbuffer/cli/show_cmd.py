"""genbuf show-generation: a compacted artifact's bytes, verified by sha256."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import GenerationArg, JsonOpt, OrganizationArg, runtime
from genbuffer.cli._output import emit, fields_table, stderr

if TYPE_CHECKING:
    from genbuffer.readback import ArtifactFacts


def show_generation_cmd(
    ctx: typer.Context,
    organization_id: OrganizationArg,
    generation_id: GenerationArg,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the bytes to this file (atomically) instead of stdout.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """The artifact's bytes exactly as pushed (stdout, or --output), verified against the
    sha256 compaction recorded; a mismatch prints nothing and exits 1.

    --json prints its facts instead (bytes, chunk_count, sha256, compacted_at/by,
    validations, whether a buffer is still in Redis); with --output, the file too.
    Example: genbuf show-generation 12 59 | cmp - pushed.txt
    """
    from genbuffer.readback import read_artifact

    rt = runtime(ctx, as_json)
    data, facts = read_artifact(rt.repository, rt.buffer, organization_id, generation_id)
    if output is not None:
        _write_atomically(output, data)
        facts = facts.model_copy(update={"output": str(output)})
    if as_json:
        emit(rt, facts, lambda console: None)
        return
    if not facts.verified:
        rt.warn("no sha256 was recorded for this artifact: its bytes are not verified")
    if output is not None:
        stderr().print(fields_table(f"wrote {facts.bytes} bytes to {output}", _rows(facts)))
        return
    if sys.stdout.isatty():
        stderr().print(fields_table("artifact", _rows(facts)))
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _rows(facts: ArtifactFacts) -> list[tuple[str, object]]:
    return [
        ("generation", facts.generation_id),
        ("bytes", facts.bytes),
        ("chunks", facts.chunk_count),
        ("sha256", facts.sha256 + (" (verified)" if facts.verified else " (not recorded)")),
        ("compacted", f"{facts.compacted_at} by {facts.compacted_by}"),
        ("validations", len(facts.validations)),
        ("buffer in Redis", "yes" if facts.buffer_in_redis else "no"),
    ]


def _write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it into place."""
    from genbuffer.errors import UsageError

    directory = path.parent if str(path.parent) else Path()
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
        with os.fdopen(handle, "wb") as file:
            file.write(data)
        Path(temporary).replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write --output {path}: {exc}") from None
