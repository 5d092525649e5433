"""What every batch job shares: how it reports progress, and how it walks a table by id."""

from __future__ import annotations

from collections.abc import Callable, Iterator

__all__ = ["Progress", "id_ranges"]

# advance(done, total): total 0 when it is not counted up front (a full scan)
Progress = Callable[[int, int], None]


def id_ranges(
    bounds: Callable[[], tuple[int, int] | None], size: int, *, follow_growth: bool = False
) -> Iterator[tuple[int, int]]:
    """Ranges ``(low, high]`` of at most ``size`` ids covering ``bounds()`` (lowest, highest).

    An id range per batch rather than ORDER BY … LIMIT: each batch is one index
    range scan, and none walks again over rows an earlier one passed. With
    ``follow_growth``, ids added past the highest while the walk went on are
    walked too (bounds are read again at the end).
    """
    found = bounds()
    if found is None:
        return
    low, high = found[0] - 1, found[1]
    while low < high:
        while low < high:
            top = min(low + size, high)
            yield low, top
            low = top
        if not follow_growth:
            return
        found = bounds()
        high = high if found is None else max(high, found[1])
