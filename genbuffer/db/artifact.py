"""Writing a compacted artifact: `compacted` and `llm_response` from its base64 bytes.

The caller hands over the base64 encoding (bytes, made by one C call) and drops
the raw content. On PostgreSQL those bytes cross the wire once, as a binary bytea
parameter, and the server derives both columns: the text (`convert_from`, a
UTF-8 check) and, for valid JSON, the jsonb of the decoded bytes. A 64 MB
generation costs genbuf the base64 bytes and one driver copy, instead of a base64
text, a JSON text and the driver's copies of each. Elsewhere the text is bound as
is and `llm_response` as the decoded JSON text (never parsed and re-serialised).
"""

from __future__ import annotations

import base64
from functools import cache
from typing import Any

from sqlalchemy import Connection, LargeBinary, Text, bindparam, func, insert, null, select, update
from sqlalchemy import cast as cast_

from genbuffer.db.rows import GEN, LEDGER, prepared

__all__ = ["ROW_COLUMNS", "save_artifact", "save_offloaded"]


# The columns a compaction writes besides the artifact's two.
ROW_COLUMNS = (
    "metadata",
    "chunk_count",
    "compacted_at",
    "compacted_by",
    "updated_at",
    "last_validation_issue_id",
)


@cache  # built on first use, once: a command that writes no artifact never builds them
def _postgresql(llm_response_mode: str) -> Any:
    from sqlalchemy.dialects.postgresql import BYTEA, JSONB  # noqa: PLC0415  (PostgreSQL only)

    # the text made once, in the one-row FROM, for both columns
    encoded = select(
        func.convert_from(cast_(bindparam("encoded", type_=LargeBinary), BYTEA), "UTF8").label(
            "b64"
        ),
        cast_(bindparam("row_id"), GEN.c.id.type).label("id"),
    ).subquery("artifact")
    decoded = func.convert_from(func.decode(encoded.c.b64, "base64"), "UTF8")
    llm_response: Any = {
        "json": cast_(decoded, JSONB),
        "null": null(),
        "keep": GEN.c.llm_response,
    }[llm_response_mode]
    return (
        update(GEN)
        .where(GEN.c.id == encoded.c.id)
        .values(
            compacted=encoded.c.b64,
            llm_response=llm_response,
            **{name: bindparam(name) for name in ROW_COLUMNS},
        )
    )


@cache
def _postgresql_recorded(llm_response_mode: str, columns: tuple[str, ...]) -> Any:
    """The artifact's UPDATE and the ledger's INSERT as one statement (one round trip):
    ``WITH written AS (UPDATE … RETURNING id) INSERT INTO generation_compactions …
    SELECT … FROM written``. The ledger's values are bound as ``ledger_<column>``, each
    cast to its column's type (a NULL parameter in a SELECT list has none)."""
    written = _postgresql(llm_response_mode).returning(GEN.c.id).cte("written")
    row = select(
        *(
            cast_(bindparam(f"ledger_{name}", type_=LEDGER.c[name].type), LEDGER.c[name].type)
            for name in columns
        )
    ).select_from(written)
    return insert(LEDGER).from_select(list(columns), row)


def _bound_update(llm_response: Any) -> Any:
    """UPDATE the row: `compacted` and ROW_COLUMNS bound, `llm_response` as given."""
    return (
        update(GEN)
        .where(GEN.c.id == bindparam("row_id"))
        .values(
            compacted=bindparam("compacted"),
            llm_response=llm_response,
            **{name: bindparam(name) for name in ROW_COLUMNS},
        )
    )


@cache
def _generic(keep: bool) -> Any:
    # Text, not the column's JSON type: the bound value is already JSON text.
    return _bound_update(GEN.c.llm_response if keep else bindparam("llm_response", type_=Text()))


def save_artifact(
    connection: Connection,
    generation_id: int,
    encoded: bytes,
    *,
    llm_response: str,
    values: dict[str, Any],
    record: dict[str, Any] | None = None,
) -> None:
    """Write the artifact whose standard base64 is ``encoded``, plus ROW_COLUMNS from ``values``.

    ``llm_response``: "json" when the content is valid UTF-8 JSON that the column can
    store (the validator's verdict), "null" otherwise, or "keep" to leave the column
    as it is (a good document is never wiped by a concatenation that does not parse).
    ``record``: the compaction ledger's row, inserted in the same transaction (on
    PostgreSQL by the same statement: one round trip fewer a compaction).
    """
    params = {"row_id": generation_id, **{name: values[name] for name in ROW_COLUMNS}}
    if connection.dialect.name == "postgresql":
        # compiled once (db.rows.Prepared): SQLAlchemy's per-execute walk of this
        # statement's tree cost ~0.2 ms of CPU a compaction
        params["encoded"] = encoded
        if record is None:
            prepared(_postgresql(llm_response), connection).execute(connection, params)
            return
        params |= {f"ledger_{name}": value for name, value in record.items()}
        statement = _postgresql_recorded(llm_response, tuple(record))
        prepared(statement, connection).execute(connection, params)
        return
    params["compacted"] = encoded.decode("ascii")
    if llm_response != "keep":
        params["llm_response"] = (
            base64.b64decode(encoded).decode("utf-8") if llm_response == "json" else None
        )
    connection.execute(_generic(llm_response == "keep"), params)
    if record is not None:
        connection.execute(_RECORD, record)


_RECORD = insert(LEDGER)  # built once, its values bound


@cache
def _offloaded(dialect: str, llm_response_mode: str) -> Any:
    llm_response: Any
    if llm_response_mode == "keep":
        llm_response = GEN.c.llm_response
    elif llm_response_mode == "null":
        llm_response = null()
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import JSONB  # noqa: PLC0415  (PostgreSQL only)

        llm_response = cast_(bindparam("llm_response", type_=Text()), JSONB)
    else:
        llm_response = bindparam("llm_response", type_=Text())
    return _bound_update(llm_response)


def save_offloaded(
    connection: Connection,
    generation_id: int,
    url: str,
    *,
    llm_response: str,
    json_text: str | None,
    values: dict[str, Any],
) -> None:
    """Point the row at its offloaded artifact: `compacted` holds the object's URL.

    ``llm_response`` as in save_artifact; "json" binds ``json_text``, the artifact's
    JSON (parsed during validation, so small enough to hold)."""
    mode = "null" if llm_response == "json" and json_text is None else llm_response
    params = {"row_id": generation_id, "compacted": url}
    params |= {name: values[name] for name in ROW_COLUMNS}
    if mode == "json":
        params["llm_response"] = json_text
    connection.execute(_offloaded(connection.dialect.name, mode), params)
