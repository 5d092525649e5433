"""genbuf show-generation: a compacted artifact's bytes, verified by sha256."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import GenerationArg, JsonOpt, OrganizationArg, runtime
from genbuffer.cli._output import emit, fields_table, stderr

if TYPE_CHECKING:
    from genbuffer.observation.show_generation import ArtifactFacts


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

    An offloaded artifact (`compacted` holds an object's URL) streams from the store in
    bounded memory and is verified as it goes: --output is renamed into place only once
    verified; on stdout a mismatch is said after the last byte, with exit 1.

    --json prints its facts instead (bytes, chunk_count, sha256, compacted_at/by,
    validations, whether a buffer is still in Redis); with --output, the file too.
    Example: genbuf show-generation 12 59 | cmp - pushed.txt
    """
    from genbuffer.errors import check_output_folder
    from genbuffer.objects.offload import Offload
    from genbuffer.observation.show_generation import open_artifact

    rt = runtime(ctx, as_json)
    if output is not None:
        check_output_folder("--output", output)  # before the row is read
    blocks, facts = open_artifact(
        rt.repository, rt.buffer, organization_id, generation_id, Offload.from_settings(rt.settings)
    )
    if output is not None:
        _write_atomically(output, blocks)
        facts = facts.model_copy(update={"output": str(output)})
    if as_json:
        if output is None:
            for _ in blocks:  # an offloaded artifact is verified by reading it whole
                pass
        emit(rt, facts, lambda console: None)
        return
    if not facts.verified:
        rt.warn("no sha256 was recorded for this artifact: its bytes are not verified")
    if output is not None:
        stderr().print(fields_table(f"wrote {facts.bytes} bytes to {output}", _rows(facts)))
        return
    if sys.stdout.isatty():
        stderr().print(fields_table("artifact", _rows(facts)))
    for block in blocks:
        sys.stdout.buffer.write(block)
    sys.stdout.buffer.flush()


def _rows(facts: ArtifactFacts) -> list[tuple[str, object]]:
    return [
        ("generation", facts.generation_id),
        ("bytes", facts.bytes),
        ("chunks", facts.chunk_count),
        ("sha256", facts.sha256 + (" (verified)" if facts.verified else " (not recorded)")),
        ("compacted", f"{facts.compacted_at} by {facts.compacted_by}"),
        ("validations", len(facts.validations)),
        (
            "buffer in Redis",
            {True: "yes", False: "no", None: "unknown (unreachable)"}[facts.buffer_in_redis],
        ),
        *([("offloaded to", facts.offloaded)] if facts.offloaded else []),
        *(
            [("provisional", f"{facts.provisional}: later chunks continue or replace it")]
            if facts.provisional
            else []
        ),
        *[
            ("late chunks", f"{entry['outcome']} ({entry['rule'] or 'before rules'})")
            for entry in facts.late_chunks
        ],
    ]


def _write_atomically(path: Path, blocks: Iterable[bytes]) -> None:
    """Write ``blocks`` to a temporary file beside ``path``, then rename it into place;
    an error on the way (a mismatch found after the last block) leaves ``path`` as it was."""
    from genbuffer.errors import UsageError

    directory = path.parent if str(path.parent) else Path()
    try:
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise UsageError(f"cannot write --output {path}: {_reason(directory, exc)}") from None
    try:
        with os.fdopen(handle, "wb") as file:
            for block in blocks:
                file.write(block)
        Path(temporary).replace(path)
    except OSError as exc:
        raise UsageError(f"cannot write --output {path}: {_reason(directory, exc)}") from None
    finally:
        Path(temporary).unlink(missing_ok=True)


def _reason(directory: Path, exc: OSError) -> str:
    """Why --output could not be written, naming what the user gave: the OSError's own
    text names the temporary file beside it, which the user never heard of."""
    if not directory.exists():
        return f"no such directory {directory}"
    if not directory.is_dir():
        return f"{directory} is not a directory"
    return exc.strerror or type(exc).__name__
