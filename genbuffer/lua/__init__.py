"""genbuffer's Lua scripts (the ``.lua`` files here) and, beside each, its typed call.

Each ``<name>.py`` holds the arguments of ``<name>.lua`` as a frozen dataclass (a
``ScriptCall``) and a parser of its reply. The dataclass names, in ``KEYS``,
``ARGV`` and ``TAIL``, the field behind each ``KEYS[i]`` and ``ARGV[i]`` of the
script's header, in order, and the field holding the variable tail ``ARGV[n…]``;
``keys()`` and ``argv()`` produce exactly that (tests/test_scripts.py reads every
header and checks it). Values go to Redis as they are (``str``, ``bytes``,
``int``), an enum as its value and ``None`` as ``''`` (the scripts' "none").

``genbuffer.redis.scripts.ScriptRunner`` runs them (EVALSHA, NOSCRIPT handled there).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from enum import Enum
from typing import Any, ClassVar, Generic, TypeVar

__all__ = ["Arg", "R", "ScriptCall", "encode", "text"]

Arg = bytes | str | int  # what redis-py and hiredis send as they are
R = TypeVar("R")


_PLAIN = frozenset({bytes, str, int})


def encode(value: object) -> Arg:
    """One argument as it goes to Redis: an enum as its value, None as ''."""
    if type(value) in _PLAIN:  # the usual case first: a push encodes a dozen per token
        return value  # type: ignore[return-value]
    if value is None:
        return ""
    if isinstance(value, Enum):
        return encode(value.value)
    if isinstance(value, bytes | str | int):
        return value
    raise TypeError(f"not a script argument: {value!r}")


def text(value: bytes | str) -> str:
    """A reply as text (bytes decoded as UTF-8, undecodable bytes replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class ScriptCall(ABC, Generic[R]):
    """One call of a Lua script: its keys and arguments, named, and its reply's parser.

    Subclasses are frozen dataclasses that set ``SCRIPT`` (the file's name without
    ``.lua``), ``KEYS`` and ``ARGV`` (field names, in the header's order) and
    ``TAIL`` (the field of a variable tail ``ARGV[n…]``, a sequence, or None)."""

    __slots__ = ()

    SCRIPT: ClassVar[str]
    KEYS: ClassVar[tuple[str, ...]]
    ARGV: ClassVar[tuple[str, ...]]
    TAIL: ClassVar[str | None] = None

    def keys(self) -> list[str]:
        """KEYS[1…], as the header declares them."""
        return [getattr(self, name) for name in self.KEYS]

    def argv(self) -> list[Arg]:
        """ARGV[1…], as the header declares them, then the variable tail if any."""
        # plain values as they are, without a call each: a push builds this once per token
        values = [getattr(self, name) for name in self.ARGV]
        values = [v if type(v) in _PLAIN else "" if v is None else encode(v) for v in values]
        if self.TAIL is not None:
            tail: Iterable[object] = getattr(self, self.TAIL)
            values += [v if type(v) in _PLAIN else encode(v) for v in tail]
        return values

    @abstractmethod
    def parse(self, reply: Any) -> R:
        """The script's reply, typed."""
