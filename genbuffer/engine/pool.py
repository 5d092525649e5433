"""The engine's pool: compactions at once, each in a thread and a transaction of its own.

A compaction mostly waits (Redis, the row lock, the UPDATE, the commit's WAL flush), so
a few in flight overlap those waits and let PostgreSQL flush several commits at once.
SQLite writes one at a time: one thread there, whatever was asked.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from types import TracebackType
from typing import Generic, TypeVar

from genbuffer.engine.run import Ran
from genbuffer.errors import DependencyUnavailable

__all__ = ["Finished", "Pool", "pool_size"]

T = TypeVar("T")

# (what was started, what it came to: a Ran, or the outage that stopped it)
Finished = tuple[T, Ran | DependencyUnavailable]


def pool_size(requested: int, dialect: str) -> int:
    """Compactions at once: ``requested``, but one on SQLite (one writer at a time)."""
    return 1 if dialect == "sqlite" else max(1, requested)


class Pool(Generic[T]):
    """Threads running compactions; each started with the item it is for (a scan's
    buffer, a stream's event), handed back with what it came to as it finishes."""

    def __init__(self, size: int, *, name: str) -> None:
        self.size = size
        self._executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix=name)
        self._running: dict[Future[Ran], T] = {}

    def __enter__(self) -> Pool[T]:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._executor.shutdown(wait=True)

    @property
    def running(self) -> int:
        """Compactions in flight."""
        return len(self._running)

    @property
    def in_flight(self) -> list[T]:
        """What the compactions in flight were started for."""
        return list(self._running.values())

    @property
    def free(self) -> int:
        """Threads with nothing to do."""
        return self.size - len(self._running)

    def start(self, item: T, compaction: Callable[[], Ran]) -> None:
        """Run ``compaction`` (for ``item``) on a free thread."""
        self._running[self._executor.submit(compaction)] = item

    def finished(self, timeout: float | None = None) -> list[Finished[T]]:
        """The compactions that finished: at least one unless ``timeout`` (seconds; 0:
        do not wait) ran out first; none when nothing is in flight."""
        if not self._running:
            return []
        done, _ = wait(self._running, timeout=timeout, return_when=FIRST_COMPLETED)
        return [self._settled(future) for future in done]

    def drain(self) -> list[Finished[T]]:
        """Every compaction in flight, once all of them finished."""
        if not self._running:
            return []
        done, _ = wait(self._running)
        return [self._settled(future) for future in done]

    def _settled(self, future: Future[Ran]) -> Finished[T]:
        item = self._running.pop(future)
        try:
            return item, future.result()
        except DependencyUnavailable as outage:  # run_one raises nothing else
            return item, outage
