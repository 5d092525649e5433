"""genbuffer: buffer LLM generation chunks in Redis, compact them safely into a database.

The public API::

    settings = load_settings()
    buffer = GenerationBuffer.from_settings(settings)
    buffer.push_chunk(org, generation, chunk)             # producer
    assemble_and_persist(CompactionRequest(org, generation, delete=True),
                         buffer=buffer, repository=Repository.from_settings(settings),
                         config=CompactionConfig.from_settings(settings))

Names are imported on first use, so `genbuf --help` does not pay for SQLAlchemy
and redis-py.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

_EXPORTS = {
    "CompactionConfig": "genbuffer.compaction",
    "CompactionRequest": "genbuffer.compaction",
    "CompactionResult": "genbuffer.compaction",
    "assemble_and_persist": "genbuffer.compaction",
    "GenbufferError": "genbuffer.errors",
    "PushOutcomeUnknown": "genbuffer.errors",
    "GenerationBuffer": "genbuffer.redis",
    "PushResult": "genbuffer.redis",
    "Repository": "genbuffer.db.repository",
    "Settings": "genbuffer.settings",
    "load_settings": "genbuffer.settings",
    "Issue": "genbuffer.compaction.validator",
    "Validation": "genbuffer.compaction.validator",
    "validate": "genbuffer.compaction.validator",
}

__all__ = [
    "CompactionConfig",
    "CompactionRequest",
    "CompactionResult",
    "GenbufferError",
    "GenerationBuffer",
    "Issue",
    "PushOutcomeUnknown",
    "PushResult",
    "Repository",
    "Settings",
    "Validation",
    "__version__",
    "assemble_and_persist",
    "load_settings",
    "validate",
]

if TYPE_CHECKING:
    from genbuffer.compaction import (
        CompactionConfig,
        CompactionRequest,
        CompactionResult,
        assemble_and_persist,
    )
    from genbuffer.compaction.validator import Issue, Validation, validate
    from genbuffer.db.repository import Repository
    from genbuffer.errors import GenbufferError, PushOutcomeUnknown
    from genbuffer.redis import GenerationBuffer, PushResult
    from genbuffer.settings import Settings, load_settings


def __getattr__(name: str) -> Any:
    """Import a public name from its module on first use."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genbuffer' has no attribute {name!r}")
