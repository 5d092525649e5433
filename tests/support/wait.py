"""Waiting in tests: for a condition, never for a stretch of time.

A test that needs another thread or process to reach a point polls what reaching it
makes visible (a row committed, a key gone, a line logged, a port listening) with
``wait_until``, which fails naming what it waited for; it never sleeps and hopes
the point was reached. A test that needs time to have passed (a buffer idle, a TTL
run down, a lease lapsed) makes the data old instead: ``tests/support/clock.py``,
``tests.helpers.expire_lease``.

This is the one module of tests/ that calls ``time.sleep`` (between two looks at a
condition); ``tests/test_suite_rules.py`` fails on any other, the chaos runners'
pacing excepted.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["POLL_SECONDS", "wait_until"]

T = TypeVar("T")

POLL_SECONDS = 0.05  # between two looks: short next to any timeout, light on the servers


def wait_until(
    condition: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    *,
    every: float = POLL_SECONDS,
) -> T:
    """Call ``condition`` until it returns something true, and return that.

    After ``timeout`` seconds it fails (AssertionError) saying what it waited for:
    ``what``, or what ``what()`` says then (the state last seen, a process's log).
    ``condition`` may itself fail to stop the wait early (a process that died).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            said = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {said}")
        time.sleep(every)
