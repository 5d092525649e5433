"""Cron job runs: each run of compact-pending, purge-chunks or purge-objects is recorded in the
database (doctor's and the metrics' last success) and, when asked, in a Prometheus
textfile (node_exporter's textfile collector).

A run succeeds when it completes: every buffer (or backup) was considered, even
if some generations failed (exit 1; those are counted in the compaction ledger).
A run stopped by an outage (exit 3) or a crash is a failure; so cron freshness
alerts mean "the job stopped working", not "a generation failed"."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from genbuffer.db.repository import Repository
from genbuffer.errors import GenbufferError, UsageError, check_textfile_folder

__all__ = ["JobRecord", "job_run"]


@dataclass
class JobRecord:
    """What a run says of itself before it ends: completed (clean or not), or skipped."""

    completed: bool = False
    clean: bool = False  # completed with nothing failed (exit 0)
    counts: dict[str, int] = field(default_factory=dict)
    skipped: bool = False  # another run held the lock: neither a success nor a failure

    def finish(self, *, clean: bool, counts: dict[str, int]) -> None:
        """The run completed: whether anything in it failed, and what it did."""
        self.completed, self.clean, self.counts = True, clean, counts


@contextmanager
def job_run(
    repository: Repository, job: str, *, textfile: Path | None, record: bool = True
) -> Iterator[JobRecord]:
    """Record the run of ``job`` in the block: ok as finished, or failed if it raises.

    Nothing is recorded for a dry run (``record`` False) or a skipped run. The
    textfile is written even when the database cannot take the record.
    """
    if textfile is not None:
        check_textfile_folder("--metrics-textfile", textfile)
    started = datetime.now(UTC)
    note = JobRecord()
    try:
        yield note
    except BaseException:
        if record:
            _record(repository, job, note, started, textfile, failed=True)
        raise
    if record and not note.skipped:
        _record(repository, job, note, started, textfile, failed=False)


def _record(
    repository: Repository,
    job: str,
    note: JobRecord,
    started: datetime,
    textfile: Path | None,
    *,
    failed: bool,
) -> None:
    finished = datetime.now(UTC)
    ok = note.completed and not failed
    clean = ok and note.clean
    if textfile is not None:
        # prometheus_client only for a run that writes a textfile (start-up time)
        from genbuffer.operations.job_textfile import JobRun, write_job_textfile  # noqa: PLC0415

        run = JobRun(job, ok, clean, started, finished, dict(note.counts))
        try:
            write_job_textfile(textfile, run)
        except OSError as exc:
            if not failed:  # else the run's own error is the one to report
                raise UsageError(f"cannot write --metrics-textfile {textfile}: {exc}") from None
    try:
        repository.observations.record_job_run(
            job,
            ok=ok,
            started_at=started,
            finished_at=finished,
            summary={**note.counts, "clean": clean},
        )
    except GenbufferError:
        if not failed:
            raise  # a run that worked but cannot be recorded says so (exit 3)
