"""The settings compaction reads, resolved once per command (or worker)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genbuffer.compaction.validator import schema_problem
from genbuffer.errors import UsageError
from genbuffer.faults import FaultPlan
from genbuffer.objects.offload import Offload
from genbuffer.states import ValidationMode

if TYPE_CHECKING:
    from genbuffer.settings import Settings

__all__ = ["CompactionConfig"]


@dataclass(frozen=True)
class CompactionConfig:
    """The settings compaction reads, resolved once; ``faults`` is a seam for tests."""

    strict: bool = False
    max_bytes: int = 256 * 1024 * 1024
    parse_limit: int = 8 * 1024 * 1024  # GENERATION_PARSE_MAX_BYTES
    schema: dict[str, Any] | None = None
    backup_chunks: bool = True
    audit_log: Path = Path("storage/logs/metadata-validation.log")
    max_attempts: int = 5
    regeneration: str = "replace"  # GENERATION_REGENERATION: "replace" or "append"
    late_chunks: str = "append"  # GENERATION_LATE_CHUNKS: "append" or "replace"
    offload: Offload = field(default_factory=Offload)  # GENERATION_OFFLOAD_*
    completion_events: int = 10_000  # GENERATION_COMPLETION_EVENTS_MAX_LEN (0: none)
    faults: FaultPlan = field(default_factory=FaultPlan)

    @classmethod
    def from_settings(cls, settings: Settings) -> CompactionConfig:
        """Resolve the settings, loading the JSON Schema file when one is named."""
        schema = None
        if settings.generation_json_schema is not None:
            path = settings.generation_json_schema
            try:
                schema = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise UsageError(f"GENERATION_JSON_SCHEMA {path} is unreadable: {exc}") from None
            # a bad setting stops the command here, before any generation is compacted
            # (and counted as a failed attempt) for it
            if problem := schema_problem(schema):
                raise UsageError(
                    f"GENERATION_JSON_SCHEMA {path} cannot be used: {problem}",
                    hint="fix the schema (every $ref must resolve inside it), or unset it",
                )
        return cls(
            strict=settings.metadata_validation_strict,
            max_bytes=settings.generation_max_bytes,
            parse_limit=settings.generation_parse_max_bytes,
            schema=schema,
            backup_chunks=settings.generation_chunks_backup,
            audit_log=settings.metadata_validation_log,
            max_attempts=settings.compaction_max_attempts,
            regeneration=settings.generation_regeneration,
            late_chunks=settings.generation_late_chunks,
            offload=Offload.from_settings(settings),
            completion_events=settings.generation_completion_events_max_len,
        )

    def mode(self, strict: bool | None) -> ValidationMode:
        """The validation mode of a request (``strict`` None: METADATA_VALIDATION_STRICT)."""
        return (
            ValidationMode.STRICT
            if (self.strict if strict is None else strict)
            else (ValidationMode.SOFT)
        )
