"""Running genbuf as a real process, the way cron and operators do.

The environment a run gets is the test's own settings on top of this process's
environment with every genbuf setting removed, so that nothing set for the test
session (or on the developer's machine) leaks into a run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["FAULTY_GENBUF", "GENBUF", "clean_environ", "run_genbuf", "spawn_genbuf"]

GENBUF = str(Path(sys.executable).parent / "genbuf")
# genbuf with the fault hooks a test asks for (GENBUFFER_CRASH_AT, GENBUFFER_HOLD_AT):
# see tests/support/faulty.py; production genbuf has no such settings
FAULTY_GENBUF = [sys.executable, "-m", "tests.support.faulty"]
_SETTING_PREFIXES = ("REDIS_", "DB_", "DATABASE_", "GENERATION_", "METADATA_", "GENBUF", "AWS_")


def clean_environ(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without genbuf settings, plus ``extra``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(_SETTING_PREFIXES)}
    return {**clean, **(extra or {})}


def _command(args: list[str], faults: bool) -> list[str]:
    return [*(FAULTY_GENBUF if faults else [GENBUF]), *args]


def run_genbuf(
    args: list[str],
    env: Mapping[str, str] | None = None,
    *,
    stdin: bytes | None = None,
    faults: bool = False,
    timeout: float = 120,
    **kwargs: Any,
) -> subprocess.CompletedProcess[str]:
    """Run ``genbuf ARGS`` to completion; stdout and stderr as text."""
    done = subprocess.run(
        _command(args, faults),
        input=stdin,
        env=clean_environ(env),
        capture_output=True,
        check=False,
        timeout=timeout,
        **kwargs,
    )
    return subprocess.CompletedProcess(
        done.args,
        done.returncode,
        done.stdout.decode("utf-8", "replace"),
        done.stderr.decode("utf-8", "replace"),
    )


def spawn_genbuf(
    args: list[str], env: Mapping[str, str] | None = None, *, faults: bool = False
) -> subprocess.Popen[str]:
    """Start ``genbuf ARGS`` in the background (stdout and stderr piped, as text)."""
    return subprocess.Popen(
        _command(args, faults),
        env=clean_environ(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",
    )
