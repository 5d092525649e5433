"""Runtime: the adapters built from one Settings, created on first use and shared."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from genbuffer.buffer import GenerationBuffer
from genbuffer.compaction import CompactionConfig
from genbuffer.db.repository import Repository
from genbuffer.settings import Settings

__all__ = ["Runtime"]


class Runtime:
    """What a command needs, built lazily so `--help` and usage errors touch no server."""

    def __init__(self, settings: Settings, env_file: Path | None = None) -> None:
        self.settings = settings
        self.env_file = env_file
        self.json_output = False  # set by the command, read by the CLI's error boundary

    @cached_property
    def buffer(self) -> GenerationBuffer:
        """The Redis buffer adapter."""
        return GenerationBuffer.from_settings(self.settings)

    @cached_property
    def repository(self) -> Repository:
        """The database adapter."""
        return Repository.from_settings(self.settings)

    @cached_property
    def compaction(self) -> CompactionConfig:
        """Compaction settings, the JSON Schema loaded."""
        return CompactionConfig.from_settings(self.settings)
