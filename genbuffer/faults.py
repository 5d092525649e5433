"""Fault injection at named compaction steps: a seam for tests, empty in production.

``CompactionConfig.faults`` is a FaultPlan; the settings never fill it. A test
entry point (``tests/support/faulty.py``) builds one from ``GENBUFFER_CRASH_AT=<step>``
(SIGKILL at that step, as ``kill -9`` would) and holds a process at a step by a
marker file (``on_step``), so a test acts on a process that is at that exact moment.
In-process tests use ``mode="raise"``: a BaseException that no handler catches,
which leaves transactions and Redis exactly as a killed process would, and
``on_step``, a callback run at every step (to push chunks mid-compaction).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from genbuffer.errors import UsageError

__all__ = ["IN_ROW_STEPS", "STEPS", "FaultPlan", "SimulatedCrash"]

STEPS = (
    "after_snapshot",
    "after_upload",
    "after_update",
    "before_commit",
    "after_commit",
    "before_ack",
)
# the steps every compaction passes (after_upload: only one that offloads its artifact)
IN_ROW_STEPS = tuple(step for step in STEPS if step != "after_upload")


class SimulatedCrash(BaseException):
    """Raised at a crash step when faults run in-process (never caught by genbuffer)."""


@dataclass(frozen=True)
class FaultPlan:
    """Where to crash, and what to run at every step; the default plan does nothing."""

    crash_at: str | None = None
    mode: Literal["kill", "raise"] = "kill"
    on_step: Callable[[str], None] | None = None

    @classmethod
    def parse(cls, crash_at: str | None) -> FaultPlan:
        """Build a plan from ``GENBUFFER_CRASH_AT``, rejecting an unknown step."""
        if crash_at is not None and crash_at not in STEPS:
            raise UsageError(f"unknown fault step {crash_at!r}", hint=f"one of {', '.join(STEPS)}")
        return cls(crash_at=crash_at)

    def at(self, step: str) -> None:
        """Apply the plan at ``step``."""
        if self.on_step is not None:
            self.on_step(step)
        if self.crash_at == step:
            if self.mode == "raise":
                raise SimulatedCrash(step)
            os.kill(os.getpid(), signal.SIGKILL)
