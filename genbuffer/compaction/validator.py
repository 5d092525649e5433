"""MetadataValidator: pure checks of an assembled generation. No I/O.

Every issue has a stable ``code``, a ``severity`` (strict mode aborts on
``error`` only) and, where it points into the JSON, a ``path``.

=====================  ========  ===============================================
code                   severity  when
=====================  ========  ===============================================
empty_generation       error     the assembled content has no bytes
invalid_utf8           error     the bytes are not UTF-8 (the offset is given)
invalid_json           error     not JSON, or NaN/Infinity (line, column, offset; over
                                 GENERATION_PARSE_MAX_BYTES the byte the parser stopped near)
duplicate_key          warning   an object repeats a key (the last one wins)
json_unstorable        warning   JSON a JSONB column cannot hold (NUL, lone surrogate,
                                 a number beyond a double or PostgreSQL's numeric)
json_limit             warning   valid JSON past what genbuf parses (nesting deeper
                                 than Python's recursion limit, an integer over 4,300
                                 digits): stored, llm_response left null
chunk_count_mismatch   error     chunks the producer pushed are gone (expired, popped)
                       warning   more chunks than the producer counted
sequence_gap           error     the producer skipped sequence numbers (never delivered)
buffer_missing         error     a row older than the chunk TTL with no artifact and no
                                 buffer: its chunks expired or were evicted
oversize               error     over GENERATION_MAX_BYTES
json_unchecked         warning   valid JSON over GENERATION_PARSE_MAX_BYTES (checked as
                                 it streamed, not parsed), while GENERATION_JSON_SCHEMA
                                 asks for a check
metadata_invalid       error     the row's metadata is not an object, or a reserved
                                 key has the wrong type
schema_violation       error     llm_response breaks GENERATION_JSON_SCHEMA
=====================  ========  ===============================================
"""

from __future__ import annotations

import decimal
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

__all__ = [
    "RESERVED_METADATA_TYPES",
    "Issue",
    "Validation",
    "schema_problem",
    "size_issue",
    "validate",
    "validate_unparsed",
]

Severity = Literal["error", "warning"]

# Keys genbuffer writes into `metadata`, and the JSON types they must have.
RESERVED_METADATA_TYPES: dict[str, tuple[type, ...]] = {
    "chunk_count": (int,),
    "compacted_at": (str,),
    "bytes": (int,),
    "sha256": (str,),
    "validation_errors": (list,),
    "compacted": (str,),
    "buffer": (dict,),
    "offloaded": (dict,),
}


@dataclass(frozen=True)
class Issue:
    """One validation finding."""

    code: str
    message: str
    severity: Severity = "error"
    path: str | None = None

    def as_dict(self) -> dict[str, str]:
        """The JSON form stored in `errors` and the audit log."""
        data = {"code": self.code, "message": self.message, "severity": self.severity}
        if self.path is not None:
            data["path"] = self.path
        return data


@dataclass(frozen=True)
class Validation:
    """The issues found, and the parsed JSON to store as `llm_response` (or None)."""

    issues: tuple[Issue, ...] = ()
    llm_response: Any = None
    is_json: bool = False

    @property
    def has_errors(self) -> bool:
        """Whether any issue has severity `error`."""
        return any(issue.severity == "error" for issue in self.issues)


def size_issue(size: int, limit: int) -> Issue | None:
    """An `oversize` issue when ``size`` exceeds ``limit`` bytes."""
    if size <= limit:
        return None
    return Issue(
        "oversize",
        f"generation is over the limit of {limit} bytes (reading stopped at {size} bytes)",
    )


def validate(
    content: bytes,
    *,
    missing_chunks: int = 0,
    extra_chunks: int = 0,
    row_metadata: Any = None,
    schema: Mapping[str, Any] | None = None,
    max_bytes: int | None = None,
    gaps: int = 0,
) -> Validation:
    """Validate assembled content, the chunk counts and the row's metadata."""
    issues: list[Issue] = []
    if gaps:
        issues.append(
            Issue("sequence_gap", f"the producer skipped {gaps} sequence numbers: chunks missing")
        )
    if max_bytes is not None and (too_big := size_issue(len(content), max_bytes)):
        issues.append(too_big)
    issues.extend(_count_issues(missing_chunks, extra_chunks))
    issues.extend(_metadata_issues(row_metadata))
    if not content:
        issues.append(Issue("empty_generation", "the generation has no content"))
        return Validation(tuple(issues))
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        issues.append(
            Issue("invalid_utf8", f"content is not UTF-8: {exc.reason} at byte {exc.start}")
        )
        return Validation(tuple(issues))
    parsed, json_issues = _parse_json(text)
    issues.extend(json_issues)
    if json_issues and json_issues[0].code == "invalid_json":
        return Validation(tuple(issues))
    unstorable = _unstorable_path(parsed) if _RISKY_ESCAPE.search(text) else None
    if any(issue.code == "json_unstorable" for issue in json_issues):
        unstorable = unstorable or "$"
    elif unstorable is not None:
        issues.append(
            Issue(
                "json_unstorable",
                "JSON holds a NUL character or lone surrogate that a JSONB column cannot "
                "hold; llm_response is left null, compacted keeps the bytes",
                "warning",
                unstorable,
            )
        )
    if schema is not None:
        issues.extend(_schema_issues(parsed, schema))
    return Validation(tuple(issues), None if unstorable else parsed, is_json=True)


def validate_unparsed(
    size: int,
    utf8_error: str | None,
    json_error: str | None,
    *,
    missing_chunks: int = 0,
    extra_chunks: int = 0,
    row_metadata: Any = None,
    schema: Mapping[str, Any] | None = None,
    gaps: int = 0,
) -> Validation:
    """Validate an artifact too large to parse, from what was checked as it streamed:
    its size, its UTF-8, whether it is one JSON document (``json_error`` None), the
    chunk counts and the row's metadata. No document: `llm_response` stays null."""
    issues: list[Issue] = []
    if gaps:
        issues.append(
            Issue("sequence_gap", f"the producer skipped {gaps} sequence numbers: chunks missing")
        )
    issues.extend(_count_issues(missing_chunks, extra_chunks))
    issues.extend(_metadata_issues(row_metadata))
    if not size:
        issues.append(Issue("empty_generation", "the generation has no content"))
    elif utf8_error is not None:
        issues.append(Issue("invalid_utf8", f"content is not UTF-8: {utf8_error}"))
    elif json_error is not None:
        issues.append(Issue("invalid_json", f"not valid JSON: {json_error}"))
    else:
        if schema is not None:
            issues.append(
                Issue(
                    "json_unchecked",
                    f"{size} bytes is over GENERATION_PARSE_MAX_BYTES: valid JSON, but "
                    "GENERATION_JSON_SCHEMA was not checked, llm_response is left null",
                    "warning",
                )
            )
        return Validation(tuple(issues), is_json=True)
    return Validation(tuple(issues))


def _count_issues(missing: int, extra: int) -> list[Issue]:
    issues = []
    if missing > 0:
        issues.append(
            Issue(
                "chunk_count_mismatch",
                f"{missing} chunks the producer counted are gone from the buffer "
                "(expired or removed before compaction)",
            )
        )
    if extra > 0:
        issues.append(
            Issue(
                "chunk_count_mismatch",
                f"{extra} more chunks are in the buffer than the producer counted",
                "warning",
            )
        )
    return issues


def _metadata_issues(metadata: Any) -> list[Issue]:
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return [
            Issue(
                "metadata_invalid",
                f"metadata must be a JSON object, found {type(metadata).__name__}",
                path="$",
            )
        ]
    issues = []
    for key, types in RESERVED_METADATA_TYPES.items():
        value = metadata.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, types):
            expected = " or ".join(t.__name__ for t in types)
            issues.append(
                Issue(
                    "metadata_invalid",
                    f"metadata.{key} must be {expected}, found {type(value).__name__}",
                    path=f"$.{key}",
                )
            )
    return issues


def _parse_json(text: str) -> tuple[Any, list[Issue]]:
    duplicates: list[str] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: dict[str, Any] = {}
        for key, value in items:
            if key in seen:
                duplicates.append(key)
            seen[key] = value
        return seen

    def reject_constant(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    def finite_float(literal: str) -> float:
        number = float(literal)
        if math.isinf(number) or not _fits_numeric(literal):
            overflows.append(literal)
        return number

    def bounded_int(literal: str) -> int:
        if len(literal.lstrip("-")) > INT_DIGITS_LIMIT:
            raise _BeyondLimit(f"an integer of {len(literal.lstrip('-'))} digits")
        return int(literal)

    overflows: list[str] = []
    try:
        parsed = json.loads(
            text,
            object_pairs_hook=pairs,
            parse_constant=reject_constant,
            parse_float=finite_float,
            parse_int=bounded_int,
        )
    except json.JSONDecodeError as exc:
        # some of the parser's texts end in "at" ("Unterminated string starting at"),
        # which is said here once: "starting at line 1", not "starting at at line 1"
        reason = exc.msg.removesuffix(" at")
        return None, [
            Issue(
                "invalid_json",
                f"not valid JSON: {reason} at line {exc.lineno} column {exc.colno} "
                f"(char {exc.pos})",
            )
        ]
    except (_BeyondLimit, RecursionError) as exc:
        what = (
            "nesting deeper than Python's recursion limit"
            if isinstance(exc, RecursionError)
            else str(exc)
        )
        return None, [
            Issue(
                "json_limit",
                f"valid JSON past what genbuf parses ({what}): stored as bytes, "
                "llm_response left null",
                "warning",
            )
        ]
    except ValueError as exc:
        return None, [Issue("invalid_json", f"not valid JSON: {exc}")]
    issues = [
        Issue("duplicate_key", f"key {key!r} appears more than once; the last wins", "warning")
        for key in dict.fromkeys(duplicates)
    ]
    if overflows:
        issues.append(
            Issue(
                "json_unstorable",
                f"number {overflows[0]} does not fit a double or PostgreSQL's numeric; "
                "llm_response is left null",
                "warning",
            )
        )
    return parsed, issues


INT_DIGITS_LIMIT = 4300  # Python's default int_max_str_digits
_NUMERIC_FRACTION_DIGITS = 16383  # PostgreSQL numeric: digits after the point …
_NUMERIC_INTEGER_DIGITS = 131072  # … and before it (jsonb numbers are numeric)


class _BeyondLimit(ValueError):
    """Valid JSON that genbuf does not parse (a limit, not an error in the document)."""


def _fits_numeric(literal: str) -> bool:
    """Whether a JSON number fits PostgreSQL's numeric (jsonb rejects it otherwise)."""
    number = decimal.Decimal(literal)
    exponent = number.as_tuple().exponent
    fraction = -exponent if isinstance(exponent, int) and exponent < 0 else 0
    return fraction <= _NUMERIC_FRACTION_DIGITS and number.adjusted() < _NUMERIC_INTEGER_DIGITS


# In valid JSON a NUL or a lone surrogate can only arrive as a \u escape, so documents
# without one of these escapes are not walked at all.
_RISKY_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _has_unstorable(text: str) -> bool:
    return _UNSTORABLE.search(text) is not None


def _unstorable_path(value: Any) -> str | None:
    """JSON path of the first string JSONB cannot store; iterative, so depth is no limit."""
    stack: list[tuple[str, Any]] = [("$", value)]
    while stack:
        path, node = stack.pop()
        if isinstance(node, str):
            if _has_unstorable(node):
                return path
        elif isinstance(node, dict):
            for key, child in node.items():
                if _has_unstorable(key):
                    return path
                stack.append((f"{path}.{key}", child))
        elif isinstance(node, list):
            stack.extend((f"{path}[{index}]", child) for index, child in enumerate(node))
    return None


def schema_problem(schema: Any) -> str | None:
    """Why ``schema`` cannot check a document (None: it can): not a schema by its
    meta-schema, or a ``$ref`` that resolves to nothing. jsonschema follows a ``$ref``
    only when a document reaches it, so every one is looked up here, beforehand."""
    from jsonschema import exceptions, validators  # noqa: PLC0415  (only with a schema)
    from jsonschema_specifications import REGISTRY  # noqa: PLC0415
    from referencing import Resource  # noqa: PLC0415
    from referencing.exceptions import Unresolvable  # noqa: PLC0415
    from referencing.jsonschema import DRAFT202012  # noqa: PLC0415

    if isinstance(schema, bool):
        return None  # true takes every document, false none: nothing to resolve
    if not isinstance(schema, dict):
        return f"a JSON Schema is an object or a boolean, found {type(schema).__name__}"
    try:
        validators.validator_for(schema).check_schema(schema)
    except exceptions.SchemaError as exc:
        return f"not a valid JSON Schema at {exc.json_path}: {exc.message}"
    # what jsonschema resolves against: the schema (2020-12 unless $schema says
    # otherwise, as validator_for) and the meta-schemas; nothing is fetched
    root = Resource.from_contents(schema, default_specification=DRAFT202012)
    registry = REGISTRY.with_resource(root.id() or "", root).crawl()
    pending = [(root, registry.resolver(root.id() or ""))]
    while pending:
        resource, resolver = pending.pop()
        contents = resource.contents
        for keyword in ("$ref", "$dynamicRef", "$recursiveRef"):
            ref = contents.get(keyword) if isinstance(contents, dict) else None
            if isinstance(ref, str):
                try:
                    resolver.lookup(ref)
                except Unresolvable:
                    return f"{keyword} {ref!r} resolves to nothing"
        pending.extend((sub, resolver.in_subresource(sub)) for sub in resource.subresources())
    return None


def _schema_issues(instance: Any, schema: Mapping[str, Any]) -> list[Issue]:
    from jsonschema import validators  # noqa: PLC0415  (only when a schema is configured)

    validator_class = validators.validator_for(schema)
    validator = validator_class(schema)
    found = sorted(validator.iter_errors(instance), key=lambda error: error.json_path)
    return [Issue("schema_violation", error.message, path=error.json_path) for error in found]
