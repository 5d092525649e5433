"""Property: for any chunk byte strings, the decoded `compacted` is their concatenation
(each batch opened by a "#" chunk: see the first test)."""

from __future__ import annotations

import itertools
import json

from hypothesis import HealthCheck, example, given, settings
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
# a stream after --delete that alone parses as JSON ("0") where the artifact plus it
# does not: without the opening "#" it replaced the provisional artifact, as it must
@example(batches=[[b"\x00"], [b"0"]], delete=True)
def test_compacted_equals_concatenation_of_pushed_chunks(
    stack: Stack, batches: list[list[bytes]], delete: bool
) -> None:
    """Push batches, compacting after each (with or without --delete): nothing lost or doubled.

    Each batch opens with a "#" chunk, so no stream parses as JSON: after --delete the
    next batch is a new stream, and one that alone parses as JSON (where the artifact
    plus it does not) replaces the provisional artifact instead (GENERATION_LATE_CHUNKS;
    tested in test_unattended.py)."""
    batches = [[b"#", *batch] for batch in batches]
    gen = stack.repository.create_generation(21)  # a fresh row per example
    for batch in batches:
        stack.buffer.push_many(21, gen, batch)
        compact(stack, 21, gen, delete=delete, strict=False)
    assert stored_bytes(stack, gen) == b"".join(itertools.chain.from_iterable(batches))


# What a JSONB column can hold: no NUL, no lone surrogate (the validator's
# json_unstorable cases, tested on their own).
_storable_chars = st.characters(codec="utf-8", exclude_characters="\x00")
# Floats stay under 1e16: beyond, Python writes an exponent ("1e+16") and PostgreSQL's
# jsonb normalises it to a plain integer, which reads back as an int.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15)
    | st.text(_storable_chars, max_size=20),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(_storable_chars, max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(value=_json_values, ascii_only=st.booleans(), size=st.integers(min_value=1, max_value=9))
def test_llm_response_is_the_streamed_document(
    stack: Stack, value: object, ascii_only: bool, size: int
) -> None:
    """Any JSON document, streamed in chunks that split characters: llm_response equals it."""
    gen = stack.repository.create_generation(22)
    data = json.dumps({"doc": value}, ensure_ascii=ascii_only).encode()
    stack.buffer.push_many(22, gen, [data[i : i + size] for i in range(0, len(data), size)])
    result = compact(stack, 22, gen, strict=False)
    assert result.persisted and stored_bytes(stack, gen) == data
    row = stack.repository.get_generation(gen)
    assert row is not None and row.llm_response == {"doc": value}
