"""The console script: start-up runs without garbage collections, then they resume."""

from __future__ import annotations

import gc
import threading
from importlib.metadata import entry_points

import pytest

import genbuffer.cli
from genbuffer import launch


def test_the_console_script_is_the_launcher() -> None:
    (script,) = entry_points(group="console_scripts", name="genbuf")
    assert script.value == "genbuffer.launch:main"


def test_start_up_is_not_collected_then_collection_resumes_frozen(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[bool] = []
    resumed = threading.Event()

    def resume() -> None:
        launch_resume()
        resumed.set()

    launch_resume = launch.resume_collection
    monkeypatch.setattr(genbuffer.cli, "main", lambda: seen.append(gc.isenabled()))
    monkeypatch.setattr(launch, "resume_collection", resume)
    monkeypatch.setattr(launch, "START_UP", 0.01)
    frozen = gc.get_freeze_count()
    try:
        launch.main()
        assert seen == [False]  # the command ran (its start-up) with the collector off
        assert resumed.wait(timeout=10)
        assert gc.isenabled()
        assert gc.get_freeze_count() > frozen  # what start-up made is never scanned again
    finally:
        gc.unfreeze()
        gc.enable()
