"""genbuf with fault hooks, for tests that kill or pause a compaction at a named step.

``python -m tests.support.faulty ARGS`` runs ``genbuf ARGS`` with the plan that
``GENBUFFER_CRASH_AT=<step>`` (SIGKILL at that step, as ``kill -9`` would) and
``GENBUFFER_PAUSE_AT=<step>=<seconds>`` describe. The hooks are a seam of the
compaction service (``CompactionConfig.faults``); only this test entry point
fills it from the environment, so production settings know nothing of them.
"""

from __future__ import annotations

import os
from dataclasses import replace

from genbuffer.compaction import CompactionConfig
from genbuffer.faults import FaultPlan
from genbuffer.settings import Settings


def _install() -> None:
    plan = FaultPlan.parse(
        os.environ.get("GENBUFFER_CRASH_AT") or None, os.environ.get("GENBUFFER_PAUSE_AT") or None
    )
    resolve = CompactionConfig.from_settings

    def with_faults(settings: Settings) -> CompactionConfig:
        return replace(resolve(settings), faults=plan)

    CompactionConfig.from_settings = staticmethod(with_faults)  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    _install()
    from genbuffer.cli import main

    main()
