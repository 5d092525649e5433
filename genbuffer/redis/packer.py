"""Commands packed by hiredis as they are: the ``command_packer`` of genbuf's connections.

redis-py's own packer passes every argument through its encoder in Python (a chain of
type checks an argument) before hiredis packs them: in a worker, whose scripts take a
dozen arguments a call, that was a tenth of its CPU a compaction (bench/NOTES.md, item
13). hiredis packs ``str`` (UTF-8), ``bytes``, ``int`` and ``float`` itself, exactly as
the encoder would; the rest (views, bytearrays) is made bytes first, and a type Redis
has no form for is refused with redis-py's own DataError.
"""

from __future__ import annotations

from typing import Any

from hiredis import pack_command
from redis.exceptions import DataError

__all__ = ["HiredisPacker"]


class HiredisPacker:
    """A redis-py ``command_packer``: ``pack(*args)`` is the command as Redis reads it."""

    __slots__ = ()

    def pack(self, *args: Any) -> list[bytes]:
        """The command's bytes (a command name with spaces, "CONFIG GET", is split)."""
        head = args[0]
        if (" " if isinstance(head, str) else b" ") in head:
            args = (*head.split(), *args[1:])
        try:
            return [pack_command(args)]
        except TypeError:  # rare: a bytearray or view, or no type Redis has a form for
            return [pack_command(tuple(_as_packed(arg) for arg in args))]


def _as_packed(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(
        value, str | bytes | int | float | bytearray | memoryview
    ):
        raise DataError(
            f"Invalid input of type: '{type(value).__name__}'. "
            "Convert to a bytes, string, int or float first."
        )
    return bytes(value) if isinstance(value, bytearray | memoryview) else value
