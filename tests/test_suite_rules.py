"""The test suite's own rules (issue 24): where a test goes is obvious, and no sleep
stands in for synchronisation.

A module with logic has its tests in ``tests/test_<module>.py``, named after the
module's file (``genbuffer/operations/purge_chunks.py`` → ``tests/test_purge_chunks.py``)
or, for tests of a package as a whole, after the package (``tests/test_compaction.py``,
``tests/test_cli.py``); every other ``tests/test_*.py`` is a scenario suite, listed
below with what it runs.

A test that waits for another thread or process polls a condition with
``tests/support/wait.py`` (``wait_until``), holds a genbuf process at a named step
until it releases it (``tests/support/faulty.py``, ``Hold``), or, where it needs time
to have passed, makes the data old (``tests/support/clock.py``,
``tests.helpers.expire_lease``). It never calls ``time.sleep`` and hopes the other
side got there; only the files below may.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.support.urls import REPO_ROOT

TESTS = REPO_ROOT / "tests"
PACKAGE = REPO_ROOT / "genbuffer"
# tests/test_<name>.py that mirror no module: scenario suites (several modules at work
# in one situation) and the repository's own checks, each with what it runs
SCENARIOS = {
    "adversarial": "what an adversarial pass broke: hostile input on every path",
    "adversarial_objects": "rows naming objects outside the configured store",
    "chaos": "the short chaos runs (make chaos, make chaos-cluster at full size)",
    "cluster": "genbuf on a real 3-primary Redis Cluster",
    "laravel": "beside a Laravel app: its .env, key prefix, tables, a PHP producer",
    "php_package": "the Laravel package (php/) under phpunit",
    "pooler": "genbuf through PgBouncer in transaction mode",
    "process": "genbuf as a real process: exit codes, one-line errors, signals",
    "property": "hypothesis: any chunks compact to their concatenation",
    "push_paths": "every path that writes a buffer leaves the same state",
    "state_machine": "a hypothesis state machine over push, compact, crash, failover",
    "unattended": "cron beside a Laravel-like producer: nothing wiped or skipped",
    # the repository's own checks
    "docs": "the docs: generated references, runnable examples, links",
    "layout": "the package's layering: imports, dependencies, private APIs",
    "package": "the wheel, built and installed",
    "release": "genbuf --version and the CHANGELOG's versions",
    "suite_rules": "the test suite's own rules (this file)",
}
# the only files of tests/ that may call time.sleep, and why
MAY_SLEEP = {
    "tests/support/wait.py": "wait_until's pause between two looks at a condition",
    "tests/chaos.py": "a scenario runner: it paces its producer over --duration, backs off "
    "through the outages it causes, and waits for its own milestones to place its faults",
    "tests/chaos_cluster.py": "the same scenario runner on a Redis Cluster: producer pace, "
    "back-off through failovers, faults spread over the run",
}


def sleeps(source: str) -> list[int]:
    """The lines of ``source`` that use ``time.sleep``, however it was imported
    (``import time as t``, ``from time import sleep as nap``), called or passed on."""
    tree = ast.parse(source)
    modules, functions, lines = {"time"}, set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == "time"}
        elif isinstance(node, ast.ImportFrom) and node.module == "time":
            for alias in node.names:
                if alias.name == "sleep":
                    functions.add(alias.asname or alias.name)
                    lines.append(node.lineno)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr == "sleep"
            and isinstance(node.value, ast.Name)
            and node.value.id in modules
        ) or (isinstance(node, ast.Name) and node.id in functions):
            lines.append(node.lineno)
    return sorted(set(lines))


def module_names() -> set[str]:
    """What a ``tests/test_<name>.py`` may mirror: every module's file name and every
    package's name (``migrations`` included: shipped as genbuffer.migrations)."""
    names = {"migrations"}
    for path in PACKAGE.rglob("*.py"):
        if "__pycache__" not in path.parts:
            names.add(path.parent.name if path.stem == "__init__" else path.stem)
    return names


def test_every_test_file_mirrors_a_module_or_is_a_scenario() -> None:
    """tests/test_<name>.py: <name> is a module or package of genbuffer, or a scenario
    suite listed in SCENARIOS (a test of genbuffer/x/y.py goes in tests/test_y.py)."""
    modules = module_names()
    stray = [
        path.name
        for path in sorted(TESTS.glob("test_*.py"))
        if (name := path.stem.removeprefix("test_")) not in modules and name not in SCENARIOS
    ]
    assert stray == [], (
        "name a test file after the module it tests (tests/test_<module>.py), or list "
        f"it in SCENARIOS with what it runs: {stray}"
    )


def test_every_scenario_suite_listed_exists() -> None:
    """SCENARIOS names no file that is gone."""
    gone = [name for name in SCENARIOS if not (TESTS / f"test_{name}.py").exists()]
    assert gone == [], f"remove from SCENARIOS: {gone}"


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_no_test_sleeps_outside_the_wait_helper() -> None:
    """Every time.sleep in tests/ is in wait_until or a chaos scenario runner."""
    found = [
        f"{name}:{line}"
        for path in _test_files()
        if (name := path.relative_to(REPO_ROOT).as_posix()) not in MAY_SLEEP
        for line in sleeps(path.read_text(encoding="utf-8"))
    ]
    assert found == [], (
        "time.sleep used as synchronisation: wait for a condition with "
        "tests.support.wait.wait_until, hold a genbuf process at a step with "
        "tests.support.faulty.Hold, or make the data old (tests.support.clock, "
        f"tests.helpers.expire_lease): {', '.join(found)}"
    )


def test_every_file_allowed_to_sleep_still_does() -> None:
    """The list of files that may sleep names no file that no longer does (or is gone)."""
    idle = [
        name
        for name in MAY_SLEEP
        if not (path := REPO_ROOT / name).exists() or not sleeps(path.read_text("utf-8"))
    ]
    assert idle == [], f"remove from MAY_SLEEP: {idle}"


@pytest.mark.parametrize(
    ("source", "lines"),
    [
        ("import time\ntime.sleep(1)\n", [2]),
        ("import time as t\n\nt.sleep(0.5)\n", [3]),
        ("from time import sleep\nsleep(1)\n", [1, 2]),
        ("from time import sleep as nap\n\nnap(1)\n", [1, 3]),
        ("import time\npause = time.sleep\n", [2]),
        ("import time\nthreading.Timer(1, f)\ntime.monotonic()\n", []),
        ("import asyncio\nasyncio.sleep(1)\nevent.wait(1)\n", []),
    ],
)
def test_the_rule_sees_every_spelling_of_time_sleep(source: str, lines: list[int]) -> None:
    """Aliases and imported names are found; other waits and other modules' sleep are not."""
    assert sleeps(source) == lines
