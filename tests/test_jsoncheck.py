"""The streamed JSON check: the same verdict as a full parse, wherever the blocks split."""

from __future__ import annotations

import itertools
import json

from hypothesis import given
from hypothesis import strategies as st

from genbuffer.compaction.jsoncheck import SLICE, JsonStream, json_error_of
from genbuffer.compaction.validator import validate


def _streamed(data: bytes, cuts: list[int]) -> str | None:
    """The check's error when ``data`` arrives in blocks cut at ``cuts``."""
    stream = JsonStream()
    bounds = [0, *sorted({c % (len(data) + 1) for c in cuts}), len(data)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            stream.feed(data[start:end], start)
    stream.close(len(data))
    return stream.error


def _parses(data: bytes) -> bool:
    """Whether the full validator takes ``data`` for JSON (no invalid_json error)."""
    return not any(issue.code == "invalid_json" for issue in validate(data).issues)


_JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
)


@given(_JSON_VALUES, st.lists(st.integers(min_value=0), max_size=6))
def test_any_json_document_passes_however_it_is_cut(value: object, cuts: list[int]) -> None:
    """Every JSON document passes, whatever blocks it arrives in."""
    data = json.dumps(value, allow_nan=False).encode()
    assert _streamed(data, cuts) is None


@given(
    st.text(alphabet='{}[],:"\\ 0123456789.eE+-truefalsn\x01', max_size=40),
    st.lists(st.integers(min_value=0), max_size=4),
)
def test_the_verdict_is_the_full_parsers(text: str, cuts: list[int]) -> None:
    """Any short text of JSON's own characters: valid for the stream exactly when the
    full validator parses it (NaN, trailing data, control characters, leading zeros)."""
    data = text.encode()
    if not data.strip():
        return  # empty: the validator's empty_generation, not a JSON verdict
    assert (_streamed(data, cuts) is None) == _parses(data), data


def test_an_error_names_the_slice_it_is_in_and_a_cut_document_its_end() -> None:
    """Bad bytes past the first slice are placed in theirs; an unclosed document at its
    end; neither message quotes the content."""
    body = b'{"text": "' + b"x" * (3 * SLICE) + b'", "n": 1}'
    assert json_error_of(body) is None
    bad = body.replace(b'"n": 1', b'"n": 1 oops')
    error = json_error_of(bad)
    assert error is not None and "between bytes 196608 and" in error and "oops" not in error
    cut = body[:-1]
    assert json_error_of(cut) == f"parse error: premature EOF (at byte {len(cut)}, the end)"


def test_huge_numbers_are_valid_json_not_a_crash() -> None:
    """A 100,000-digit integer or exponent, even across blocks, is valid; a leading zero
    before a long run of digits still is not."""
    huge = b"[1" + b"0" * 100_000 + b", 2.5e" + b"9" * 50_000 + b', "' + b"7" * 5000 + b'"]'
    assert _streamed(huge, [3, 70, 71, 90_000, 100_010]) is None
    assert _streamed(b"[0" + b"1" * 100_000 + b"]", [5000]) is not None
    assert json_error_of(b'{"a": 1} {"b": 2}') is not None  # one document only
