"""MetadataValidator: each code, its severity and path; pure functions, no backend."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from genbuffer.compaction.validator import validate


def _codes(content: bytes, **kw: object) -> list[tuple[str, str]]:
    return [(i.code, i.severity) for i in validate(content, **kw).issues]  # type: ignore[arg-type]


def test_clean_json_has_no_issues_and_is_parsed() -> None:
    """Valid JSON: no issues, llm_response is the parsed value."""
    result = validate(b'{"a": [1, 2.5, "x"]}')
    assert result.issues == () and result.llm_response == {"a": [1, 2.5, "x"]}


def test_empty_generation() -> None:
    """No bytes at all is an error."""
    assert _codes(b"") == [("empty_generation", "error")]


def test_invalid_utf8_gives_the_offset() -> None:
    """Non-UTF-8 content is an error pointing at the byte."""
    (issue,) = validate(b'{"a": "\xff"}').issues
    assert issue.code == "invalid_utf8" and "at byte 7" in issue.message


def test_invalid_json_gives_line_and_column() -> None:
    """A JSON syntax error names the line, column and offset."""
    (issue,) = validate(b'{\n  "a": }').issues
    assert issue.code == "invalid_json" and "line 2 column 8 (char 9)" in issue.message


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (b'{"a": "abc', "Unterminated string starting at line 1 column 7 (char 6)"),
        (b'["a\x01"]', "Invalid control character at line 1 column 4 (char 3)"),
    ],
)
def test_invalid_json_says_at_once(content: bytes, said: str) -> None:
    """The parser's own text may end in "at" (an unterminated string, a control
    character): the message reads "starting at line 1", never "at at line"."""
    (issue,) = validate(content).issues
    assert issue.code == "invalid_json" and " at at " not in issue.message
    words = issue.message.split()
    assert not [a for a, b in itertools.pairwise(words) if a == b]
    assert said in issue.message, issue.message


def test_nan_and_infinity_are_invalid_json() -> None:
    """NaN and Infinity are not JSON, whatever Python's parser allows."""
    assert _codes(b"[NaN]") == [("invalid_json", "error")]
    assert _codes(b"[-Infinity]") == [("invalid_json", "error")]


def test_duplicate_keys_warn_and_last_wins() -> None:
    """Duplicate keys are a warning; the value is the last one, as in JSON.parse."""
    result = validate(b'{"a": 1, "a": 2}')
    assert _codes(b'{"a": 1, "a": 2}') == [("duplicate_key", "warning")]
    assert result.llm_response == {"a": 2}


def test_nul_in_json_string_is_unstorable_with_path() -> None:
    """A \\u0000 inside a string cannot go to JSONB: warning with its path, no llm_response."""
    result = validate(b'{"a": [{"b": "x\\u0000"}]}')
    (issue,) = result.issues
    assert (issue.code, issue.path) == ("json_unstorable", "$.a[0].b")
    assert result.llm_response is None


def test_chunk_count_mismatch_severity_depends_on_direction() -> None:
    """Chunks gone is data loss (error); more than counted is a warning; gaps are errors."""
    assert _codes(b"1", missing_chunks=1) == [("chunk_count_mismatch", "error")]
    assert _codes(b"1", extra_chunks=1) == [("chunk_count_mismatch", "warning")]
    assert _codes(b"1", gaps=2) == [("sequence_gap", "error")]


def test_oversize() -> None:
    """Content over the limit is an error."""
    assert _codes(b"[1]", max_bytes=2) == [("oversize", "error")]


def test_metadata_must_be_an_object_with_typed_reserved_keys() -> None:
    """Non-object metadata and reserved keys of the wrong type are errors with paths."""
    assert [(i.code, i.path) for i in validate(b"1", row_metadata=[1]).issues] == [
        ("metadata_invalid", "$")
    ]
    issues = validate(b"1", row_metadata={"bytes": True, "sha256": 5, "other": 1}).issues
    assert [i.path for i in issues] == ["$.bytes", "$.sha256"]


def test_valid_json_past_the_parsers_limits_is_json_limit_not_invalid() -> None:
    """Nesting beyond the recursion limit, or an integer over 4,300 digits, is valid JSON:
    reported as a limit (warning, llm_response null), never as invalid_json or a crash."""
    deep = validate(b"[" * 100_000 + b"]" * 100_000)
    assert [(i.code, i.severity) for i in deep.issues] == [("json_limit", "warning")]
    assert deep.llm_response is None and not deep.has_errors
    big = validate(b"[" + b"7" * 5000 + b"]")
    assert [i.code for i in big.issues] == ["json_limit"] and "5000 digits" in big.issues[0].message


def test_numbers_jsonb_rejects_are_unstorable() -> None:
    """[1e-20000] parses in Python (as 0.0) but PostgreSQL's numeric refuses it: the bytes
    are kept and llm_response is null, instead of a DataError on every try."""
    for document in (b"[1e-20000]", b"[1e400]", b'{"x": 1e200000}'):
        result = validate(document)
        assert [i.code for i in result.issues] == ["json_unstorable"], document
        assert result.llm_response is None
    assert validate(b"[1e-300, 123.456e10]").issues == ()


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner),
    )
)
def test_any_json_value_round_trips_or_is_flagged(value: object) -> None:
    """Any JSON document either parses back equal or is flagged json_unstorable."""
    result = validate(json.dumps(value).encode())
    assert not result.has_errors
    if result.issues:
        assert [i.code for i in result.issues] == ["json_unstorable"]
    else:
        assert result.llm_response == value


def test_schema_problem_finds_what_would_fail_only_when_a_document_reaches_it() -> None:
    """A $ref that resolves to nothing (locally, under a nested $id, or remote: nothing is
    fetched) and a schema its meta-schema rejects are named; resolvable ones pass."""
    from genbuffer.compaction.validator import schema_problem  # noqa: PLC0415

    assert schema_problem({"properties": {"a": {"$ref": "#/$defs/x"}}, "$defs": {"x": {}}}) is None
    assert schema_problem({"items": {"$ref": "#"}}) is None
    assert schema_problem({"$ref": "https://json-schema.org/draft/2020-12/schema"}) is None
    nested = {
        "$id": "https://x.test/root",
        "$defs": {"n": {"$id": "nested", "$defs": {"y": {}}, "items": {"$ref": "#/$defs/y"}}},
        "properties": {"p": {"$ref": "nested"}},
    }
    assert schema_problem(nested) is None
    draft7 = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "properties": {"a": {"$ref": "#/definitions/x"}},
        "definitions": {"x": {"type": "integer"}},
    }
    assert schema_problem(draft7) is None
    for broken in (
        {"properties": {"a": {"$ref": "#/definitions/missing"}}},
        {"$defs": {"n": {"$id": "https://x.test/n", "items": {"$ref": "#/$defs/gone"}}}},
        {"$ref": "https://example.com/remote.json"},
    ):
        assert "resolves to nothing" in (schema_problem(broken) or ""), broken
    assert "at $.type" in (schema_problem({"type": 5}) or "")
    assert "object or a boolean" in (schema_problem([1]) or "")
