"""A cron job's run in a Prometheus textfile, for node_exporter's textfile collector:
when it ran, whether it succeeded, how long it took, what it did, its last success."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from prometheus_client import CollectorRegistry, write_to_textfile
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["JobRun", "write_job_textfile"]


@dataclass(frozen=True)
class JobRun:
    """One run of a cron job, as its textfile records it."""

    job: str
    ok: bool  # completed (a success for cron freshness)
    clean: bool  # completed with nothing failed (exit 0)
    started_at: datetime
    finished_at: datetime
    counts: dict[str, int]


def _previous_success(path: Path, job: str) -> float | None:
    """The last success a job's textfile recorded, so that a failed run keeps it."""
    from prometheus_client.parser import text_string_to_metric_families  # noqa: PLC0415

    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "genbuf_last_success_timestamp_seconds" and sample.labels == {
                "job": job,
                "source": "textfile",
            }:
                return float(sample.value)
    return None


def write_job_textfile(path: Path, run: JobRun) -> None:
    """Record one run for node_exporter's textfile collector: when it ran, whether it
    succeeded, how long it took, what it did, and when it last succeeded."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_JobRunCollector(run, _previous_success(path, run.job)))
    write_to_textfile(str(path), registry)


class _JobRunCollector(Collector):
    def __init__(self, run: JobRun, previous_success: float | None) -> None:
        self.run = run
        self.previous_success = previous_success

    def collect(self) -> Iterator[Metric]:
        run = self.run
        yield _job_gauge(
            "genbuf_job_last_run_timestamp_seconds",
            "When the job last ran.",
            run.job,
            run.finished_at.timestamp(),
        )
        yield _job_gauge(
            "genbuf_job_last_run_ok",
            "Whether the job's last run completed (1), even if some items failed.",
            run.job,
            1.0 if run.ok else 0.0,
        )
        yield _job_gauge(
            "genbuf_job_last_run_clean",
            "Whether the job's last run completed with nothing failed (exit 0).",
            run.job,
            1.0 if run.clean else 0.0,
        )
        yield _job_gauge(
            "genbuf_job_duration_seconds",
            "How long the job's last run took.",
            run.job,
            (run.finished_at - run.started_at).total_seconds(),
        )
        items = GaugeMetricFamily(
            "genbuf_job_items", "What the job's last run did.", labels=["job", "outcome"]
        )
        for outcome, count in sorted(run.counts.items()):
            items.add_metric([run.job, outcome], count)
        yield items
        success = run.finished_at.timestamp() if run.ok else self.previous_success
        if success is not None:
            family = GaugeMetricFamily(
                "genbuf_last_success_timestamp_seconds",
                "When each cron job last succeeded (source: the database, or the job's textfile).",
                labels=["job", "source"],
            )
            family.add_metric([run.job, "textfile"], success)
            yield family


def _job_gauge(name: str, documentation: str, job: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=["job"])
    family.add_metric([job], value)
    return family
