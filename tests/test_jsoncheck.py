"""The streamed JSON check: the same verdict as a full parse, wherever the blocks split."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genbuffer.compaction.jsoncheck import SLICE, JsonStream, _context, _place, json_error_of
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


def test_an_error_names_where_the_parser_stopped_and_a_cut_document_its_end() -> None:
    """Bad bytes past the first slice are placed where yajl stopped (the offending
    byte read); an unclosed document at its end; neither message quotes the content."""
    body = b'{"text": "' + b"x" * (3 * SLICE) + b'", "n": 1}'
    assert json_error_of(body) is None
    bad = body.replace(b'"n": 1', b'"n": 1 oops')
    error = json_error_of(bad)
    assert error is not None and "oops" not in error
    assert error.endswith(f"(near byte {bad.index(b'oops') + 1})")
    cut = body[:-1]
    assert json_error_of(cut) == f"parse error: premature EOF (at byte {len(cut)}, the end)"


def test_huge_numbers_are_valid_json_not_a_crash() -> None:
    """A 100,000-digit integer or exponent, even across blocks, is valid; a leading zero
    before a long run of digits still is not."""
    huge = b"[1" + b"0" * 100_000 + b", 2.5e" + b"9" * 50_000 + b', "' + b"7" * 5000 + b'"]'
    assert _streamed(huge, [3, 70, 71, 90_000, 100_010]) is None
    assert _streamed(b"[0" + b"1" * 100_000 + b"]", [5000]) is not None
    assert json_error_of(b'{"a": 1} {"b": 2}') is not None  # one document only


@pytest.mark.parametrize(
    ("document", "stopped"),
    [
        (b"[1,2,,3]", 6),
        (b"[1] garbage", 5),
        (b'{"a":\n tru}', 10),
        (b"[" + b"1," * 40000 + b"x]", 80002),
    ],
)
def test_an_error_is_placed_where_the_parser_stopped(document: bytes, stopped: int) -> None:
    """The offset is the number of bytes yajl read when it stopped, whatever the slice."""
    error = json_error_of(document)
    assert error is not None and error.endswith(f"(near byte {stopped})"), error


def test_a_place_that_fits_twice_is_named_by_its_slice() -> None:
    """Where the text yajl quotes fits several places of the slice, the slice is named
    instead of a guess."""
    piece = b"ab" * 100
    quoted = _context(piece, 100)
    assert quoted == _context(piece, 102)
    error = ValueError(b"parse error\n" + quoted + b"\n" + b" " * 21 + b"(right here) ------^\n")
    assert _place(error, piece) is None
    unique = b"x" * 50 + b"!" + b"y" * 50
    error = ValueError(
        b"e\n" + _context(unique, 51) + b"\n" + b" " * 21 + b"(right here) ------^\n"
    )
    assert _place(error, unique) == 51
