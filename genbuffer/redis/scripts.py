"""Running genbuffer's Lua scripts: one runner, NOSCRIPT handled here only.

A call is a typed ``genbuffer.lua`` dataclass (its keys, its arguments, its reply's
parser); the runner sends it as EVALSHA of the script's SHA1 (computed locally, so
nothing is loaded up front) and, when the server answers NOSCRIPT (the call did not
run: a restart, a failover, SCRIPT FLUSH between load and call), loads the script
and calls again, SCRIPT_RELOADS times at most: a server that keeps refusing is
reported as unavailable. The same holds for calls in a pipeline (redis-py's
``pipeline``, whose ``execute`` first loads the scripts it carries): the calls
refused are sent again. It works alike for ``redis.Redis``, ``redis.RedisCluster``
(every call's keys in one slot; redis-py refuses EVALSHA in a cluster pipeline, so
callers run those one by one) and fakeredis.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis

from genbuffer.errors import RedisUnavailable
from genbuffer.lua import R, ScriptCall
from genbuffer.redis.connection import (
    SCRIPT_RELOADS,
    RedisTarget,
    SentUnconfirmed,
    load_script,
    redis_errors,
)
from genbuffer.settings import mask_url

__all__ = ["ScriptRunner"]


def _never_sent(exc: Exception) -> bool:
    """Whether a connection error happened while connecting, before any command was
    written (redis-py's connect errors say "connecting to"): then a retry is safe."""
    return "connecting to" in str(exc)


class ScriptRunner:
    """Runs ``genbuffer.lua`` calls on a target's client (see the module)."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self._scripts: dict[str, Any] = {}  # name -> redis-py Script (source, SHA1)

    def _script(self, name: str) -> Any:
        """redis-py's Script for ``name``: its source and SHA1, and what a pipeline's
        ``execute`` loads before sending (nothing is sent here)."""
        script = self._scripts.get(name)
        if script is None:
            script = self._scripts[name] = self.target.client.register_script(load_script(name))
        return script

    def sha(self, call: ScriptCall[Any]) -> str:
        """The SHA1 the call's script is run by."""
        sha: str = self._script(call.SCRIPT).sha
        return sha

    def command(self, call: ScriptCall[Any]) -> tuple[Any, ...]:
        """The call as one EVALSHA command, for a connection of the caller's own (a
        NOSCRIPT reply then says it did not run: run it here, ``run``)."""
        keys = call.keys()
        return ("EVALSHA", self.sha(call), len(keys), *keys, *call.argv())

    def _reload(self, call: ScriptCall[Any]) -> None:
        """Load the call's script after a NOSCRIPT (on a cluster: on every primary)."""
        script = self._script(call.SCRIPT)
        script.sha = self.target.client.script_load(script.script)

    def _exhausted(self) -> RedisUnavailable:
        return RedisUnavailable(
            f"Redis at {mask_url(self.target.url)} keeps dropping genbuffer's Lua scripts "
            "(NOSCRIPT)",
            hint="is something running SCRIPT FLUSH in a loop, or is the server restarting?",
        )

    def run(self, call: ScriptCall[R]) -> R:
        """Run one call and parse its reply; on NOSCRIPT, load the script and call again.

        redis-py's errors are the caller's to map (``redis_errors``)."""
        keys = call.keys()
        argv = call.argv()
        for _ in range(SCRIPT_RELOADS):
            try:
                reply = self.target.client.evalsha(self.sha(call), len(keys), *keys, *argv)
            except redis.exceptions.NoScriptError:
                self._reload(call)
            else:
                return call.parse(reply)
        raise self._exhausted()

    def run_once(self, call: ScriptCall[R]) -> R:
        """Run a call whose effect must not happen twice (an unsequenced push).

        On a Redis Cluster the call goes to the key's node with no retry of redis-py's
        (which sends the call again, to the same or a promoted node, after a connection
        error: the first may have run); MOVED, ASK and NOSCRIPT, which say it did not
        run, are still followed. A connection error after the call was written is
        SentUnconfirmed; one before is RedisUnavailable, as any. A single server's
        client is used as ``run`` uses it: its one retry comes after a failed connect."""
        if not self.target.cluster:
            return self.run(call)
        client: Any = self.target.client
        keys = call.keys()
        argv = call.argv()
        with redis_errors(self.target.url):
            for _ in range(SCRIPT_RELOADS):
                node = client.get_node_from_key(keys[0])
                try:
                    reply = client.execute_command(
                        "EVALSHA", self.sha(call), len(keys), *keys, *argv, target_nodes=node
                    )
                except redis.exceptions.NoScriptError:
                    self._reload(call)
                except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
                    if _never_sent(exc):
                        raise
                    raise SentUnconfirmed(str(exc)) from None
                else:
                    return call.parse(reply)
        raise self._exhausted()

    def run_pipelined(self, calls: Sequence[ScriptCall[R]], *, in_order: bool = False) -> list[R]:
        """Run ``calls`` in one round trip (a pipeline, not a transaction) and parse their
        replies, in order; not on a Redis Cluster (redis-py refuses scripts there).

        Calls refused with NOSCRIPT did not run: their scripts are loaded and they are
        sent again (after a Redis restart, redis-py retries a pipeline on a new
        connection without loading its scripts). ``in_order``: the calls must run in
        order (pushes), so the refused ones must be the last ones; otherwise nothing
        more is sent. Any other error reply is raised (the first)."""
        replies: list[Any] = [None] * len(calls)
        waiting = list(range(len(calls)))
        client = self.target.client
        for _ in range(SCRIPT_RELOADS):
            pipe = client.pipeline(transaction=False)
            for index in waiting:
                call = calls[index]
                self._script(call.SCRIPT)(keys=call.keys(), args=call.argv(), client=pipe)
            results = pipe.execute(raise_on_error=False)
            refused = [isinstance(r, redis.exceptions.NoScriptError) for r in results]
            ran = refused.index(True) if True in refused else len(results)
            if in_order and not all(refused[ran:]):
                key = calls[waiting[ran]].keys()[0]
                raise redis.exceptions.ResponseError(
                    f"{calls[waiting[ran]].SCRIPT}.lua on {key}: the script cache was flushed "
                    "mid-pipeline; stopped rather than run the calls out of order"
                )
            for result in results:
                if isinstance(result, Exception) and not isinstance(
                    result, redis.exceptions.NoScriptError
                ):
                    raise result
            for index, result, no_script in zip(waiting, results, refused, strict=True):
                if not no_script:
                    replies[index] = calls[index].parse(result)
            waiting = [index for index, no in zip(waiting, refused, strict=True) if no]
            if not waiting:
                return replies
            for refused_call in {calls[index].SCRIPT: calls[index] for index in waiting}.values():
                self._reload(refused_call)
        raise self._exhausted()
