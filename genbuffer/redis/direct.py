"""Commands of one key sent straight to the key's node of a Redis Cluster.

redis-py's cluster client spends about 0.2 ms of Python on each command it routes
(measured with cProfile: ``_internal_execute_command``), several times the round trip
itself on a local network, and asks the server for a movable-keys command's keys
(COMMAND GETKEYS) first. A command whose key is known goes instead through the
client redis-py keeps for that key's node (``get_node_from_key``,
``get_redis_connection``: public API). A node that no longer serves the key (MOVED,
ASK, TRYAGAIN, a cluster going down, a node unreachable after a failover) sends it
again through the cluster client, which follows the cluster as it does for any
command; a command sent that way must be one that may run twice.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import redis

from genbuffer.redis.connection import RedisTarget

__all__ = [
    "MOVED",
    "Command",
    "Keyed",
    "on_key_node",
    "pipeline_on_nodes",
    "raise_first",
    "send_on_one_key",
]

T = TypeVar("T")
Command = tuple[Any, ...]  # one Redis command, as execute_command takes it
# a command and its key; the options redis-py's reply parsing takes (OBJECT's infotype)
Keyed = tuple[str, Command] | tuple[str, Command, Mapping[str, Any]]

# what a cluster node says, or does, when it no longer serves a key
MOVED = (
    redis.exceptions.MovedError,
    redis.exceptions.AskError,
    redis.exceptions.TryAgainError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)


def on_key_node(target: RedisTarget, key: str, send: Callable[[Any], T]) -> T:
    """``send(client)`` with the client of ``key``'s node on a Redis Cluster, and again
    with the cluster client when that node no longer serves it; on one server with its
    client. ``send`` must be safe to repeat (it may have run on the node)."""
    client: Any = target.client
    if target.cluster:
        try:
            return send(client.get_redis_connection(client.get_node_from_key(key)))
        except MOVED:
            pass  # (the cluster client's errors are the ones reported)
    return send(client)


def send_on_one_key(target: RedisTarget, commands: Sequence[Command]) -> None:
    """``commands``, all on one key (their first argument), in one pipeline to its node
    (``pipeline_on_nodes``); an error reply is raised. None: nothing is sent."""
    if commands:
        raise_first(pipeline_on_nodes(target, [(command[1], command) for command in commands]))


def raise_first(replies: list[Any]) -> list[Any]:
    """``replies`` (a pipeline's, error replies as their exceptions), the first error
    among them raised as the server worded it."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def pipeline_on_nodes(target: RedisTarget, commands: Sequence[Keyed]) -> list[Any]:
    """Each (key, command[, options for redis-py's reply parsing]) in one pipeline (not a
    transaction), the replies in order, error replies as their exceptions (not raised).
    On a Redis Cluster one pipeline to each node, to the client of its keys' node
    (redis-py's cluster pipeline spends several times more Python on each command),
    the nodes in the order of their first command; the commands a node refuses as no
    longer its own (MOVED, ASK, TRYAGAIN), or all of a node that cannot be reached, go
    again through the cluster client, one by one, which follows the cluster, before
    the next node is sent its share: every command must be safe to repeat. A
    connection error there is raised, and no later node's command has gone out (a
    caller that lists a command first knows it ran before any other node's)."""
    if not target.cluster:
        pipe: Any = target.client.pipeline(transaction=False)
        for keyed in commands:
            _queue(pipe, keyed)
        return list(pipe.execute(raise_on_error=False))
    client: Any = target.client
    by_node: dict[str, list[int]] = {}
    for index, keyed in enumerate(commands):
        by_node.setdefault(client.get_node_from_key(keyed[0]).name, []).append(index)
    replies: list[Any] = [None] * len(commands)
    for name, indexes in by_node.items():
        node = client.get_redis_connection(client.get_node(node_name=name))
        pipe = node.pipeline(transaction=False)
        for index in indexes:
            _queue(pipe, commands[index])
        try:
            results = pipe.execute(raise_on_error=False)
        except MOVED:
            again = indexes
        else:
            replies_of = zip(indexes, results, strict=True)
            again = [index for index, result in replies_of if isinstance(result, MOVED)]
            for index, result in zip(indexes, results, strict=True):
                replies[index] = result
        for index in again:  # at once: a later node's commands may rely on these
            try:
                replies[index] = _queue(client, commands[index])
            except redis.exceptions.ResponseError as error:
                replies[index] = error
    return replies


def _queue(client: Any, keyed: Keyed) -> Any:
    """``keyed``'s command on ``client`` (queued, on a pipeline)."""
    options = keyed[2] if len(keyed) == 3 else {}
    return client.execute_command(*keyed[1], **options)
