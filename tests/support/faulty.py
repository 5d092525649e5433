"""genbuf with fault hooks, for tests that kill or hold a compaction at a named step.

``python -m tests.support.faulty ARGS`` runs ``genbuf ARGS`` with the plan that
``GENBUFFER_CRASH_AT=<step>`` (SIGKILL at that step, as ``kill -9`` would) and
``GENBUFFER_HOLD_AT=<step>`` with ``GENBUFFER_HOLD_DIR=<directory>`` (a ``Hold``)
describe: every compaction that reaches the step says so in a marker file and waits
there until the test releases it, so a test acts on a process that is at that
point, not one it hopes is. The hooks are
a seam of the compaction service (``CompactionConfig.faults``); only this test
entry point fills it from the environment, so production settings know nothing of
them.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from subprocess import Popen

from genbuffer.compaction import CompactionConfig
from genbuffer.faults import STEPS, FaultPlan
from genbuffer.settings import Settings
from tests.support.wait import wait_until

__all__ = ["HOLD_SECONDS", "Hold"]

HOLD_SECONDS = 120  # a process never released (its test failed) goes on after this


class Hold:
    """Where a test holds genbuf processes: a step, and a directory for the two marker
    files (``reached``, written by the process; ``released``, by the test)."""

    def __init__(self, step: str, directory: Path) -> None:
        assert step in STEPS, step
        self.step = step
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.reached = directory / "reached"
        self.released = directory / "released"

    def env(self) -> dict[str, str]:
        """The settings that hold a faulty genbuf at the step."""
        return {"GENBUFFER_HOLD_AT": self.step, "GENBUFFER_HOLD_DIR": str(self.directory)}

    def wait_reached(self, process: Popen[str] | Popen[bytes], timeout: float = 60) -> None:
        """Until a compaction of ``process`` waits at the step (failing if it ended)."""

        def held() -> bool:
            assert process.poll() is None, f"genbuf exited {process.returncode} before {self.step}"
            return self.reached.exists()

        wait_until(held, timeout, f"genbuf to reach {self.step}")

    def release(self) -> None:
        """Let every compaction held at the step (and any that reaches it later) go on."""
        self.released.touch()

    def at(self, step: str) -> None:
        """In the genbuf process: at the step, say so and wait to be released."""
        if step != self.step:
            return
        with self.reached.open("a") as marker:
            marker.write(f"{os.getpid()} {step}\n")
        wait_until(self.released.exists, HOLD_SECONDS, f"the test to release {step}")


def _install() -> None:
    plan = FaultPlan.parse(os.environ.get("GENBUFFER_CRASH_AT") or None)
    if hold_at := os.environ.get("GENBUFFER_HOLD_AT"):
        plan = replace(plan, on_step=Hold(hold_at, Path(os.environ["GENBUFFER_HOLD_DIR"])).at)
    resolve = CompactionConfig.from_settings

    def with_faults(settings: Settings) -> CompactionConfig:
        return replace(resolve(settings), faults=plan)

    CompactionConfig.from_settings = staticmethod(with_faults)  # type: ignore[method-assign,assignment]


if __name__ == "__main__":
    _install()
    from genbuffer.cli import main

    main()
