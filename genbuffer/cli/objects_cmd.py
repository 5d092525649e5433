"""genbuf offload-compacted and purge-objects: large artifacts in the object store."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from genbuffer.cli._options import DryRunOpt, JsonOpt, MetricsTextfileOpt, runtime
from genbuffer.cli._output import emit, note_already_running
from genbuffer.cli._progress import progress_bar

if TYPE_CHECKING:
    from genbuffer.objects.store import Store
    from genbuffer.runtime import Runtime


def _configured_store(rt: Runtime) -> Store:
    """The store GENERATION_OFFLOAD_URL names; a usage error when there is none."""
    from genbuffer.errors import UsageError
    from genbuffer.objects.offload import Offload

    if rt.settings.generation_offload_url is None:
        raise UsageError(
            "GENERATION_OFFLOAD_URL is not set: there is no object store to use",
            hint="set GENERATION_OFFLOAD_URL (s3://bucket/prefix or file:///path)",
        )
    store = Offload.from_settings(rt.settings, always=True).store
    assert store is not None  # always=True opens it whenever the URL is set
    return store


def offload_compacted_cmd(
    ctx: typer.Context,
    min_bytes: Annotated[
        int | None,
        typer.Option(
            "--min-bytes",
            min=1,
            help="Move artifacts of at least this many bytes. [default: GENERATION_OFFLOAD_BYTES]",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, max=100_000, help="Rows read per query.")
    ] = 100,
    dry_run: DryRunOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Move existing large base64 artifacts from their rows to the object store.

    Each row is moved in a transaction of its own, with the row locked: uploaded to the
    object its sha256 names, then `compacted` holds the URL. Resumable and idempotent:
    run it again after a stop, a moved row is never selected again. One run at a time.
    Example: genbuf offload-compacted --min-bytes 8388608 --dry-run
    """
    from genbuffer.errors import UsageError
    from genbuffer.operations.offload_compacted import offload_compacted

    rt = runtime(ctx, as_json)
    store = _configured_store(rt)
    threshold = min_bytes or rt.settings.generation_offload_bytes
    if threshold is None:
        raise UsageError(
            "no size given: pass --min-bytes or set GENERATION_OFFLOAD_BYTES",
            hint="genbuf offload-compacted --min-bytes 8388608",
        )
    with progress_bar("offloading") as advance:
        result = offload_compacted(
            rt.repository,
            store,
            compression=rt.settings.generation_offload_compression,
            min_bytes=threshold,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=advance,
            faults=rt.compaction.faults,
        )
    if result.already_running:
        note_already_running("offload-compacted", result.held_by)
    verb = "would move" if dry_run else "moved"
    emit(
        rt,
        result,
        lambda console: console.print(
            f"{verb} {result.offloaded} of {result.candidates} artifacts of at least "
            f"{threshold} bytes ({result.bytes} bytes"
            + ("" if dry_run else f", {result.stored_bytes} in the store")
            + f") to {result.store}"
            + (f"; skipped {len(result.skipped)}: {result.skipped}" if result.skipped else "")
        ),
    )
    if not result.ok:
        raise typer.Exit(1)


def purge_objects_cmd(
    ctx: typer.Context,
    grace: Annotated[
        str,
        typer.Option(
            "--grace",
            help="Leave objects younger than this (an upload may be about to commit): 24h, "
            "30m, or 0.",
        ),
    ] = "24h",
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=1,
            max=100_000,
            help="Rows read at a time while collecting the objects rows name.",
        ),
    ] = 500,
    dry_run: DryRunOpt = False,
    metrics_textfile: MetricsTextfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete the objects no row points at: uploads whose compaction never committed.

    An object is kept while any row or history entry names it, compared as canonical
    locations (file://localhost/srv/objs and file:///srv//objs are file:///srv/objs).
    When rows name objects but none in this store, nothing is deleted (exit 2, naming
    both stores). An orphan is deleted with its generation's row locked, so a compaction
    writing it meanwhile is never undone. Objects genbuf did not name are left alone.
    Each run is recorded for doctor and metrics (and in --metrics-textfile). One run at a
    time: a second says the first is running and exits 0.
    Example (cron): genbuf purge-objects --grace 24h --json
    """
    from genbuffer.durations import parse_age
    from genbuffer.operations.job_runs import job_run
    from genbuffer.operations.purge_objects import purge_objects

    rt = runtime(ctx, as_json)
    # 0 is safe (each orphan is deleted with its row locked) but never the default
    age = timedelta(0) if grace.strip() in {"0", "0s"} else parse_age(grace)
    store = _configured_store(rt)
    with (
        job_run(
            rt.repository, "purge-objects", textfile=metrics_textfile, record=not dry_run
        ) as run,
        progress_bar("checking objects") as advance,
    ):
        result = purge_objects(
            rt.repository,
            store,
            grace=age,
            batch_size=batch_size,
            dry_run=dry_run,
            progress=advance,
        )
        run.skipped = result.already_running
        run.finish(clean=result.ok, counts={"deleted": result.deleted, "orphans": result.orphans})
    if result.already_running:
        note_already_running("purge-objects", result.held_by)
    verb = "would delete" if dry_run else "deleted"
    count = result.orphans if dry_run else result.deleted
    emit(
        rt,
        result,
        lambda console: console.print(
            f"{verb} {count} orphaned objects older than {grace} in {result.store} "
            f"({result.objects} objects: {result.referenced} referenced, {result.young} younger, "
            f"{result.foreign} not genbuf's)"
        ),
    )
