"""Runtime: the settings and adapters of one CLI invocation, each built on first use."""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from genbuffer.compaction import CompactionConfig
    from genbuffer.db.repository import Repository
    from genbuffer.redis import GenerationBuffer
    from genbuffer.settings import Settings

__all__ = ["Runtime"]

log = logging.getLogger("genbuffer")


class Runtime:
    """Lazy on purpose: `--help` and usage errors load no settings and touch no server."""

    def __init__(self, env_file: Path | None = None, settings: Settings | None = None) -> None:
        self._env_file = env_file
        self.json_output = False  # set by the command, read by the CLI's error boundary
        self.warnings: list[str] = []  # also in the --json document, never inside it on stderr
        if settings is not None:
            self.__dict__["settings"] = settings

    def warn(self, message: str) -> None:
        """A warning: one line on stderr, and a `warnings` entry in the --json document."""
        if message not in self.warnings:
            self.warnings.append(message)
            log.warning(message)

    @property
    def env_file(self) -> Path | None:
        """The env file: --env-file, else GENBUF_ENV_FILE, else none."""
        from genbuffer.settings import env_file_from_environment  # noqa: PLC0415

        return self._env_file or env_file_from_environment()

    @cached_property
    def settings(self) -> Settings:
        """Settings from the environment and the env file."""
        from genbuffer.settings import load_settings  # noqa: PLC0415

        return load_settings(self.env_file)

    @cached_property
    def buffer(self) -> GenerationBuffer:
        """The Redis buffer adapter (a UsageError when no Redis is configured)."""
        from genbuffer.redis import GenerationBuffer  # noqa: PLC0415

        return GenerationBuffer.from_settings(self.settings)

    @cached_property
    def repository(self) -> Repository:
        """The database adapter; the embedded SQLite default is announced, never silent.
        A SQLite file that does not exist is DatabaseUnavailable, not created (an empty
        file would only fail for want of tables, and stay behind): `genbuf db upgrade`
        creates it, through ``new_repository``."""
        from genbuffer.db.engine import require_sqlite_file  # noqa: PLC0415

        require_sqlite_file(self.settings.effective_database_url())
        return self.new_repository()

    def new_repository(self) -> Repository:
        """The database adapter, creating a SQLite file that does not exist (db upgrade)."""
        from genbuffer.db.repository import Repository  # noqa: PLC0415
        from genbuffer.settings import mask_url  # noqa: PLC0415

        if not self.settings.database_configured():
            self.warn(
                "DATABASE_URL is not set (nor DB_CONNECTION): using the embedded database "
                f"{mask_url(self.settings.effective_database_url())}"
            )
        return Repository.from_settings(self.settings)

    def existing_repository(self) -> Repository:
        """The database adapter for checks that only read (the file is never created)."""
        return self.repository

    @cached_property
    def compaction(self) -> CompactionConfig:
        """Compaction settings, the JSON Schema loaded."""
        from genbuffer.compaction import CompactionConfig  # noqa: PLC0415

        return CompactionConfig.from_settings(self.settings)
