"""Property: for any chunk byte strings, the decoded `compacted` is their concatenation."""

from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Stack
from tests.helpers import compact, stored_bytes

_chunks = st.lists(st.binary(min_size=0, max_size=64), min_size=1, max_size=25)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(batches=st.lists(_chunks, min_size=1, max_size=3), delete=st.booleans())
def test_compacted_equals_concatenation_of_pushed_chunks(
    stack: Stack, batches: list[list[bytes]], delete: bool
) -> None:
    """Push batches, compacting after each (with or without --delete): nothing lost or doubled."""
    gen = stack.repository.create_generation(21)  # a fresh row per example
    for batch in batches:
        stack.buffer.push_many(21, gen, batch)
        compact(stack, 21, gen, delete=delete, strict=False)
    assert stored_bytes(stack, gen) == b"".join(itertools.chain.from_iterable(batches))
