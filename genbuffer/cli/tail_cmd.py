"""genbuf tail: a generation's chunks as they arrive, byte-exact on stdout."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from genbuffer.cli._options import GenerationArg, JsonOpt, OrganizationArg, ScenarioOpt, runtime
from genbuffer.cli._output import write_json


def tail_cmd(
    ctx: typer.Context,
    organization_id: OrganizationArg,
    generation_id: GenerationArg,
    scenario_id: ScenarioOpt = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            "-f",
            help="Keep printing chunks as they arrive, until the stream is finished or "
            "compacted (waits for a buffer that does not exist yet).",
        ),
    ] = False,
    poll: Annotated[
        float, typer.Option("--poll", min=0.01, help="Seconds between reads while waiting.")
    ] = 0.2,
    as_json: JsonOpt = False,
) -> None:
    """Print a buffer's chunks byte for byte, in push order (read-only).

    Chunks already compacted and trimmed are said on stderr (see show-generation).
    --json prints, at the end, one document with the chunk and byte counts instead of
    the bytes. Example (QA): genbuf tail 12 59 --follow
    """
    from genbuffer.observation.tail import follow_buffer, tail_key

    rt = runtime(ctx, as_json)
    buffer = rt.buffer
    # no buffer yet: follow_buffer waits for it (--follow) or says there is none
    key = tail_key(buffer, organization_id, generation_id, scenario_id) or buffer.read_key_for(
        organization_id, generation_id, scenario_id
    )
    chunks = size = 0
    out = sys.stdout.buffer
    for page in follow_buffer(buffer, key, follow=follow, poll=poll, note=rt.warn):
        chunks += len(page)
        size += sum(map(len, page))
        if not as_json:
            out.write(b"".join(page))
            out.flush()
    if as_json:
        document: dict[str, object] = {"ok": True, "key": key, "chunks": chunks, "bytes": size}
        if rt.warnings:
            document["warnings"] = list(rt.warnings)
        write_json(document)
