"""Runtime: the settings and adapters of one CLI invocation, each built on first use."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genbuffer.buffer import GenerationBuffer
    from genbuffer.compaction import CompactionConfig
    from genbuffer.db.repository import Repository
    from genbuffer.settings import Settings

__all__ = ["Runtime"]


class Runtime:
    """Lazy on purpose: `--help` and usage errors load no settings and touch no server."""

    def __init__(self, env_file: Path | None = None, settings: Settings | None = None) -> None:
        self.env_file = env_file
        self.json_output = False  # set by the command, read by the CLI's error boundary
        if settings is not None:
            self.__dict__["settings"] = settings

    @cached_property
    def settings(self) -> Settings:
        """Settings from the environment and the env file; warns about an unset prefix."""
        import logging  # noqa: PLC0415

        from genbuffer.settings import MEMORY_REDIS_URL, load_settings  # noqa: PLC0415

        settings = load_settings(self.env_file)
        log = logging.getLogger("genbuffer")
        if settings.redis_url is None and settings.redis_host is None:
            log.info(
                "REDIS_URL is not set: using %s, an in-process Redis that ends with this command",
                MEMORY_REDIS_URL,
            )
        if warning := settings.prefix_warning():
            log.warning(warning)
        return settings

    @cached_property
    def buffer(self) -> GenerationBuffer:
        """The Redis buffer adapter."""
        from genbuffer.buffer import GenerationBuffer  # noqa: PLC0415

        return GenerationBuffer.from_settings(self.settings)

    @cached_property
    def repository(self) -> Repository:
        """The database adapter."""
        from genbuffer.db.repository import Repository  # noqa: PLC0415

        return Repository.from_settings(self.settings)

    @cached_property
    def compaction(self) -> CompactionConfig:
        """Compaction settings, the JSON Schema loaded."""
        from genbuffer.compaction import CompactionConfig  # noqa: PLC0415

        return CompactionConfig.from_settings(self.settings)
