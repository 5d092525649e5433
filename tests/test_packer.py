"""genbuf's command packer writes exactly what redis-py's own would."""

from __future__ import annotations

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from redis.connection import Connection

from genbuffer.redis.packer import HiredisPacker
from tests.conftest import Stack

ARGUMENT = st.one_of(
    st.text(),
    st.binary(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.binary().map(bytearray),
    st.binary().map(memoryview),
)


def _theirs(*args: object) -> bytes:
    """What redis-py sends (a view or bytearray as its bytes: redis-py 6 refuses some)."""
    plain = [bytes(a) if isinstance(a, bytearray | memoryview) else a for a in args]
    return b"".join(Connection().pack_command(*plain))


@given(
    st.sampled_from(["SET", "EVALSHA", b"RPUSH", "CONFIG GET", b"CLIENT SETNAME"]),
    st.lists(ARGUMENT, max_size=12),
)
def test_the_bytes_are_redis_pys(command: str | bytes, args: list[object]) -> None:
    assert b"".join(HiredisPacker().pack(command, *args)) == _theirs(command, *args)


@pytest.mark.parametrize("bad", [True, None, [1], {"a": 1}])
def test_a_value_redis_has_no_form_for_is_redis_pys_data_error(bad: object) -> None:
    with pytest.raises(redis.exceptions.DataError, match="Invalid input of type") as ours:
        HiredisPacker().pack("SET", "k", bad)
    with pytest.raises(redis.exceptions.DataError):  # (its message varies by version)
        _theirs("SET", "k", bad)
    assert type(bad).__name__ in str(ours.value)


def test_a_single_servers_connections_pack_with_it(servers: Stack) -> None:
    client = servers.buffer.client
    assert isinstance(client, redis.Redis)
    packer = client.connection_pool.connection_kwargs["command_packer"]
    assert isinstance(packer, HiredisPacker)
    assert client.ping()
