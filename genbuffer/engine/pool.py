"""The engine's pool: compactions at once, each (or each batch) in a thread and a
transaction of its own.

A compaction mostly waits (Redis, the row lock, the UPDATE, the commit's WAL flush), so
a few in flight overlap those waits and let PostgreSQL flush several commits at once.
SQLite writes one at a time: one thread there, whatever was asked.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from itertools import count
from queue import Empty, SimpleQueue
from types import TracebackType
from typing import Generic, TypeVar

from genbuffer.engine.run import Ran
from genbuffer.errors import DependencyUnavailable

__all__ = ["Finished", "Pool", "pool_size"]

T = TypeVar("T")

# (what was started, what it came to: a Ran, or the outage that stopped it)
Finished = tuple[T, Ran | DependencyUnavailable]
Outcomes = list[Ran | DependencyUnavailable]  # a batch's, in the order of its items


def pool_size(requested: int, dialect: str) -> int:
    """Compactions at once: ``requested``, but one on SQLite (one writer at a time)."""
    return 1 if dialect == "sqlite" else max(1, requested)


class Pool(Generic[T]):
    """Threads running compactions; each started with the item it is for (a scan's
    buffer, a stream's event), or a batch of them run in one transaction, handed back
    with what each came to as they finish. Work and results go through two C-level
    queues (``queue.SimpleQueue``): a worker's main loop asks for what finished after
    every read, and a ``concurrent.futures.wait`` cost it a waiter on every future."""

    def __init__(self, size: int, *, name: str) -> None:
        self.size = size
        self._jobs: SimpleQueue[tuple[int, Callable[[], Outcomes]] | None] = SimpleQueue()
        self._done: SimpleQueue[tuple[int, Outcomes | BaseException]] = SimpleQueue()
        self._running: dict[int, list[T]] = {}
        self._taken: list[Finished[T]] = []  # settled, not handed back (another raised)
        self._ids = count()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}_{index}", daemon=True)
            for index in range(size)
        ]
        for thread in self._threads:
            thread.start()

    def __enter__(self) -> Pool[T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            ident, compactions = job
            outcome: Outcomes | BaseException
            try:
                outcome = compactions()
            except BaseException as error:  # handed to the caller, as a future's result would
                outcome = error
            self._done.put((ident, outcome))

    @property
    def running(self) -> int:
        """Compactions (or batches of them) in flight."""
        return len(self._running)

    @property
    def in_flight(self) -> list[T]:
        """What the compactions in flight were started for."""
        return [item for items in self._running.values() for item in items]

    @property
    def free(self) -> int:
        """Threads with nothing to do."""
        return self.size - len(self._running)

    def start(self, item: T, compaction: Callable[[], Ran]) -> None:
        """Run ``compaction`` (for ``item``) on a free thread."""

        def one() -> Outcomes:
            try:
                return [compaction()]
            except DependencyUnavailable as outage:  # run_one raises nothing else
                return [outage]

        self.start_batch([item], one)

    def start_batch(self, items: Sequence[T], compactions: Callable[[], Outcomes]) -> None:
        """Run ``compactions`` (one outcome for each of ``items``, in order) on a free
        thread."""
        ident = next(self._ids)
        self._running[ident] = list(items)
        self._jobs.put((ident, compactions))

    def finished(self, timeout: float | None = None) -> list[Finished[T]]:
        """The compactions that finished: at least one unless ``timeout`` (seconds; 0:
        do not wait) ran out first; none when nothing is in flight."""
        if self._taken or not self._running:
            return self._hand_back([])
        try:
            first = self._done.get(timeout=timeout) if timeout != 0 else self._done.get_nowait()
        except Empty:
            return []
        done = [first]
        while len(done) < len(self._running):
            try:
                done.append(self._done.get_nowait())
            except Empty:
                break
        return self._hand_back(done)

    def drain(self) -> list[Finished[T]]:
        """Every compaction in flight, once all of them finished."""
        return self._hand_back([self._done.get() for _ in range(len(self._running))])

    def _hand_back(self, done: list[tuple[int, Outcomes | BaseException]]) -> list[Finished[T]]:
        """Every result taken settled (none in flight forever); a runner's unexpected
        error raised after that, the others kept for the next call."""
        error: BaseException | None = None
        for ident, outcome in done:
            items = self._running.pop(ident)
            if isinstance(outcome, DependencyUnavailable):  # (a batch's runner raises nothing)
                self._taken += [(item, outcome) for item in items]
            elif isinstance(outcome, BaseException):
                error = error or outcome  # (its items are left for a take-over)
            else:
                self._taken += zip(items, outcome, strict=True)
        if error is not None:
            raise error
        taken, self._taken = self._taken, []
        return taken
