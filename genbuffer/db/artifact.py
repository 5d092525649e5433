"""Writing a compacted artifact: `compacted` (base64) and `llm_response` from the raw bytes.

On PostgreSQL the bytes cross the wire once, as a binary bytea parameter, and the
server derives both columns from them: a 64 MB generation costs genbuf one driver
copy instead of a base64 text, a JSON text and the driver's copies of each.
Elsewhere Python encodes the base64, and `llm_response` is bound as the validated
JSON text itself (never parsed and re-serialised here).
"""

from __future__ import annotations

import base64
from typing import Any, cast

from sqlalchemy import Connection, LargeBinary, Table, Text, bindparam, func, null, select, update
from sqlalchemy import cast as cast_
from sqlalchemy.dialects.postgresql import BYTEA, JSONB

from genbuffer.db.schema import ScenarioGeneration

__all__ = ["ROW_COLUMNS", "save_artifact"]

GEN = cast(Table, ScenarioGeneration.__table__)

# The columns a compaction writes besides the artifact's two.
ROW_COLUMNS = (
    "metadata",
    "chunk_count",
    "compacted_at",
    "compacted_by",
    "updated_at",
    "last_validation_issue_id",
)


def _postgresql(as_json: bool) -> Any:
    raw = select(
        cast_(bindparam("content", type_=LargeBinary), BYTEA).label("b"),
        cast_(bindparam("row_id"), GEN.c.id.type).label("id"),
    ).subquery("artifact")
    # encode(…, 'base64') wraps lines at 76 characters; without the newlines it is
    # exactly Python's base64.b64encode.
    compacted = func.translate(func.encode(raw.c.b, "base64"), "\n", "")
    llm_response = cast_(func.convert_from(raw.c.b, "UTF8"), JSONB) if as_json else null()
    return (
        update(GEN)
        .where(GEN.c.id == raw.c.id)
        .values(
            compacted=compacted,
            llm_response=llm_response,
            **{name: bindparam(name) for name in ROW_COLUMNS},
        )
    )


_GENERIC = (
    update(GEN)
    .where(GEN.c.id == bindparam("row_id"))
    .values(
        compacted=bindparam("compacted"),
        # Text, not the column's JSON type: the bound value is already JSON text.
        llm_response=bindparam("llm_response", type_=Text()),
        **{name: bindparam(name) for name in ROW_COLUMNS},
    )
)
_POSTGRESQL = {True: _postgresql(True), False: _postgresql(False)}


def save_artifact(
    connection: Connection,
    generation_id: int,
    content: bytes,
    *,
    as_json: bool,
    values: dict[str, Any],
) -> None:
    """Write ``content`` as the row's artifact, plus ROW_COLUMNS from ``values``.

    ``as_json`` says the content is valid UTF-8 JSON that the column can store
    (the validator's verdict); otherwise `llm_response` is NULL.
    """
    params = {"row_id": generation_id, **{name: values[name] for name in ROW_COLUMNS}}
    if connection.dialect.name == "postgresql":
        connection.execute(_POSTGRESQL[as_json], {**params, "content": content})
        return
    params["compacted"] = base64.b64encode(content).decode("ascii")
    params["llm_response"] = content.decode("utf-8") if as_json else None
    connection.execute(_GENERIC, params)
