"""genbuffer's Redis side, one module per job.

- ``connection``: the client, its URL and errors, running Lua scripts
- ``meta``: the meta hash's fields and TTL rules, and a typed view of it
- ``layout``: where a buffer's keys live (one slot, or split on a cluster), one strategy
- ``producer``: push_chunk, push_many, finish (push.lua, as the layout sends it)
- ``protocol``: what compaction does to a buffer (snapshot, read, acknowledge)
- ``scan``: finding buffers; ``keyspace``: keys as they are
- ``buffer``: GenerationBuffer, the producer with the other parts beside it

Only this package imports redis-py.
"""

from typing import TYPE_CHECKING, Any

from genbuffer.redis.buffer import GenerationBuffer
from genbuffer.redis.connection import connect_redis
from genbuffer.redis.keyspace import KeyInfo
from genbuffer.redis.producer import PushResult
from genbuffer.redis.protocol import BufferSnapshot

if TYPE_CHECKING:
    from genbuffer.redis.scan import FoundBuffer

__all__ = [
    "BufferSnapshot",
    "FoundBuffer",
    "GenerationBuffer",
    "KeyInfo",
    "PushResult",
    "connect_redis",
]


def __getattr__(name: str) -> Any:
    # discovery (scan.py, observe.lua's call) loads when used: a compaction never scans
    if name == "FoundBuffer":
        from genbuffer.redis.scan import FoundBuffer  # noqa: PLC0415

        return FoundBuffer
    raise AttributeError(f"module 'genbuffer.redis' has no attribute {name!r}")
