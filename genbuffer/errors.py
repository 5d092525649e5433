"""The one exception tree of genbuffer, and the exit code each class maps to.

::

    GenbufferError                  1  base; never raised itself
    ├── UsageError                  2  bad id, bad option, bad setting or env file
    ├── Interrupted        130 or 143  stopped by SIGINT or SIGTERM, after saying what it did
    ├── ObjectRefused               4  a row or Redis named an object outside the configured
    │                                  stores, or not by a name genbuf writes: nothing read
    ├── OperationFailed             1  the operation ran and failed
    │   ├── GenerationNotFound      1  no row, or the row belongs to another organization
    │   ├── NothingToCompact        1  no buffer for the generation
    │   ├── AmbiguousBuffer         1  two buffers (with and without the scenario) for one
    │   ├── WrongPrefix             1  no buffer under the prefix, buffers under another
    │   ├── ForeignArtifact         1  the row holds an artifact genbuf did not write
    │   ├── SchemaMissing           1  the tables are not there: run `genbuf db upgrade`
    │   ├── Quarantined             1  the generation failed too often; --force retries it
    │   ├── StreamChanged           1  the buffer was replaced while it was read; retry
    │   └── LeaseLost               1  a cron job could not renew its lease and stopped
    └── DependencyUnavailable       3  a server is unreachable
        ├── RedisUnavailable        3
        │   └── PushOutcomeUnknown  3  a push's connection failed after it was sent: its
        │                              chunks may have arrived (retry with sequence numbers)
        └── DatabaseUnavailable     3

The CLI catches ``GenbufferError`` at one boundary, prints ``error: <message>``
(and ``hint: <hint>`` when there is one) on stderr and exits with ``exit_code``.
"""

from __future__ import annotations

import shlex
from pathlib import Path

__all__ = [
    "AmbiguousBuffer",
    "DatabaseUnavailable",
    "DependencyUnavailable",
    "ForeignArtifact",
    "GenbufferError",
    "GenerationNotFound",
    "Interrupted",
    "LeaseLost",
    "NothingToCompact",
    "ObjectRefused",
    "OperationFailed",
    "PushOutcomeUnknown",
    "Quarantined",
    "RedisUnavailable",
    "SchemaMissing",
    "StreamChanged",
    "UsageError",
    "WrongPrefix",
    "check_output_folder",
    "check_textfile_folder",
]


class GenbufferError(Exception):
    """Base of every error genbuffer raises on purpose."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(GenbufferError):
    """The caller asked for something malformed: a bad id, option or setting."""

    exit_code = 2


class Interrupted(GenbufferError):
    """A signal stopped the command, which finished what it had in hand and said so."""

    def __init__(self, message: str, *, signal_name: str, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = 128 + {"SIGINT": 2, "SIGTERM": 15}.get(signal_name, 15)


class ObjectRefused(GenbufferError):
    """An object URL from a row (or Redis) outside the stores the settings name, or not
    a name genbuf writes for that row: refused before a byte is read. Its message says
    nothing of what is there (no size, digest or content); it never counts toward
    quarantine (see genbuffer.objects.boundary)."""

    exit_code = 4


class OperationFailed(GenbufferError):
    """The operation ran and did not succeed."""

    exit_code = 1


class GenerationNotFound(OperationFailed):
    """No `scenario_generations` row with that id for that organization."""


class NothingToCompact(OperationFailed):
    """There is no Redis buffer for the generation."""


class AmbiguousBuffer(OperationFailed):
    """A generation has a buffer under its scenario key and one under the key without."""


class WrongPrefix(OperationFailed):
    """Nothing under the configured key prefix while buffers exist under another one."""


class ForeignArtifact(OperationFailed):
    """The row already holds a `compacted` artifact that genbuf did not write."""


class SchemaMissing(OperationFailed):
    """The database has not been migrated."""


class Quarantined(OperationFailed):
    """The generation failed COMPACTION_MAX_ATTEMPTS times and is set aside."""


class StreamChanged(OperationFailed):
    """The buffer was deleted and recreated while it was being read."""


class LeaseLost(OperationFailed):
    """A cron job's lease expired before it could renew it; it stopped so as not to overlap."""


class DependencyUnavailable(GenbufferError):
    """A server genbuffer depends on could not be reached."""

    exit_code = 3


class RedisUnavailable(DependencyUnavailable):
    """Redis refused, dropped or timed out the connection."""


class PushOutcomeUnknown(RedisUnavailable):
    """A push was sent and its connection failed before the reply: its chunks may or may
    not have been appended. Pushing them again unsequenced may append them twice; a
    push with sequence numbers (``seq=``) skips what already arrived, so it is the safe
    retry. ``confirmed`` chunks were acknowledged, up to ``in_doubt`` more may be in."""

    def __init__(
        self, message: str, *, confirmed: int, in_doubt: int, hint: str | None = None
    ) -> None:
        super().__init__(message, hint=hint)
        self.confirmed = confirmed
        self.in_doubt = in_doubt


class DatabaseUnavailable(DependencyUnavailable):
    """The database refused, dropped or timed out the connection."""


def check_output_folder(option: str, path: Path, *, where: str | None = None) -> None:
    """Refuse (UsageError) a file to write (``option`` ``path``) whose folder is missing,
    or a file, before any work. ``where``: which folder the file belongs in, appended to
    the hint."""
    folder = path.parent
    if folder.is_dir():
        return
    # the nearest thing on the way that exists: a file there makes mkdir -p fail too
    blocking = next((p for p in (folder, *folder.parents) if p.exists() or p.is_symlink()), None)
    if blocking is not None and not blocking.is_dir():
        what = "a file" if blocking.exists() else "a broken symbolic link"
        reason = f"{blocking} is not a directory"
        if blocking != folder:
            reason = f"no such directory {folder}: {reason}"
        fix = f"{blocking} is {what}: give {option} a path in a directory"
    else:
        reason = f"no such directory {folder}"
        fix = f"create the directory first (mkdir -p {shlex.quote(str(folder))})"
    raise UsageError(
        f"cannot write {option} {path}: {reason}", hint=f"{fix}{f'; {where}' if where else ''}"
    )


def check_textfile_folder(option: str, path: Path) -> None:
    """``check_output_folder`` of a node_exporter textfile (the hint says where it goes)."""
    check_output_folder(
        option, path, where="a textfile belongs in node_exporter's --collector.textfile.directory"
    )
