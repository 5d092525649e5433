"""genbuf push: stdin into a generation buffer, one chunk a line."""

from __future__ import annotations

import signal
from typing import Annotated

import typer

from genbuffer.cli._options import GenerationArg, JsonOpt, OrganizationArg, ScenarioOpt, runtime
from genbuffer.cli._output import emit


def push_cmd(
    ctx: typer.Context,
    organization_id: OrganizationArg,
    generation_id: GenerationArg,
    scenario_id: ScenarioOpt = None,
    finish: Annotated[
        bool, typer.Option("--finish", help="Mark the stream finished afterwards.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Push stdin into the buffer, one chunk a line with its newline kept.

    Lines are sent as they are read (within 0.1 s). SIGTERM or Ctrl-C: what was read
    is pushed, then it exits 143 or 130 saying how many chunks went.
    Example: genbuf push 12 59 --finish < response.json
    """
    from genbuffer.errors import UsageError
    from genbuffer.ingest.push import StopRequest, push_lines

    rt = runtime(ctx, as_json)
    try:
        stdin = typer.get_binary_stream("stdin")
    except (OSError, ValueError, AttributeError, RuntimeError):
        raise UsageError(
            "stdin is closed: nothing to push", hint="genbuf push ORG GEN < FILE"
        ) from None
    stop = StopRequest()
    previous = {
        number: signal.signal(number, lambda n, _f: stop.request(signal.Signals(n).name))
        for number in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        result = push_lines(
            rt.buffer,
            organization_id,
            generation_id,
            stdin,
            scenario_id=scenario_id,
            finish=finish,
            stop=stop,
        )
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    from genbuffer.settings import MEMORY_REDIS_URL  # deferred, as the runtime defers settings

    if rt.settings.effective_redis_url().startswith(MEMORY_REDIS_URL):
        rt.warn(
            "REDIS_URL=memory:// is an in-process Redis: the chunks pushed are gone when "
            "this command ends (set REDIS_URL to the app's Redis)"
        )
    emit(
        rt,
        result,
        lambda console: console.print(
            f"pushed {result.chunks} chunk{'' if result.chunks == 1 else 's'} "
            f"({result.bytes} bytes) to {result.key}; it now holds {result.length}"
            + ("; the stream is marked finished" if result.finished else "")
        ),
    )
