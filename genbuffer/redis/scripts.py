"""Running genbuffer's Lua scripts: one runner, NOSCRIPT handled here only.

A call is a typed ``genbuffer.lua`` dataclass (its keys, its arguments, its reply's
parser); the runner sends it as EVALSHA of the script's SHA1 (computed locally, so
nothing is loaded up front) and, when the server answers NOSCRIPT (the call did not
run: a restart, a failover, SCRIPT FLUSH between load and call), loads the script
and calls again, SCRIPT_RELOADS times at most: a server that keeps refusing is
reported as unavailable. The same holds for calls in a pipeline (sent as EVALSHA
too: nothing asks SCRIPT EXISTS first): the calls refused are sent again. It works
alike for ``redis.Redis``, ``redis.RedisCluster`` (every call's keys in one slot; a
cluster pipeline carries EVALSHA as a plain command, each node sent its share) and
fakeredis.

A call whose effect must not happen twice (an unsequenced push) is sent *once*
(``run_once``, ``run_after``): on one server through
``genbuffer.redis.once``, on a cluster to its key's node without redis-py's retry.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import redis

from genbuffer.errors import RedisUnavailable
from genbuffer.lua import R, ScriptCall
from genbuffer.redis.connection import (
    SCRIPT_RELOADS,
    RedisTarget,
    load_script,
)
from genbuffer.redis.direct import on_key_node, pipeline_on_nodes, raise_first
from genbuffer.redis.once import OnceClient, never_sent, unconfirmed
from genbuffer.settings import MEMORY_REDIS_URL, mask_url

__all__ = ["RefusedAfter", "ScriptRunner"]


class RefusedAfter(Exception):
    """``run_after``: the commands ran, and then the call was refused (an error reply,
    e.g. OOM inside the script): what they wrote stays, the call's part did not happen."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


class ScriptRunner:
    """Runs ``genbuffer.lua`` calls on a target's client (see the module)."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target
        self._scripts: dict[str, Any] = {}  # name -> redis-py Script (source, SHA1)
        self._loaded: set[str] = set()  # scripts loaded by run_after and run_then
        # writes sent once on one server (a cluster routes them itself; the in-process
        # Redis loses no connection)
        local = target.cluster or target.url.startswith(MEMORY_REDIS_URL)
        self._local = local
        self._once: OnceClient | None = None  # built on the first write sent once

    def close(self) -> None:
        """Close the connections of writes sent once (the next one opens another)."""
        if self._once is not None:
            self._once.close()
            self._once = None

    def _writes(self) -> OnceClient | None:
        """The client of writes sent once on one server (None: not needed here)."""
        if self._once is None and not self._local:
            self._once = OnceClient(self.target.client)
        return self._once

    def _script(self, name: str) -> Any:
        """redis-py's Script for ``name``: its source and SHA1 (nothing is sent here)."""
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
        On a Redis Cluster it goes straight to its first key's node (``on_key_node``).

        redis-py's errors are the caller's to map (``redis_errors``)."""
        keys = call.keys()
        argv = call.argv()
        for _ in range(SCRIPT_RELOADS):
            command = ("EVALSHA", self.sha(call), len(keys), *keys, *argv)
            try:
                reply = on_key_node(self.target, keys[0], partial(_send, command))
            except redis.exceptions.NoScriptError:
                self._reload(call)
            else:
                return call.parse(reply)
        raise self._exhausted()

    def run_once(self, call: ScriptCall[R]) -> R:
        """Run a call whose effect must not happen twice (an unsequenced push).

        Sent once (see the module); on a Redis Cluster to the key's node, as redis-py's
        retry would send it again to the same or a promoted node. MOVED, ASK and
        NOSCRIPT, which say it did not run, are still followed. A connection error after
        the call was written is SentUnconfirmed (NotWritten while it was written); one
        before it is raised as it is (the caller's ``redis_errors`` maps it)."""
        keys = call.keys()
        command = ("EVALSHA", self.sha(call), len(keys), *keys, *call.argv())
        for _ in range(SCRIPT_RELOADS):
            try:
                reply = self._send_once(command, keys[0])
            except redis.exceptions.NoScriptError:
                self._reload(call)
                command = ("EVALSHA", self.sha(call), *command[2:])
            else:
                return call.parse(reply)
        raise self._exhausted()

    def _send_once(self, command: tuple[Any, ...], key: str) -> Any:
        """One command sent once (see ``run_once``)."""
        writes = self._writes()
        if writes is not None:
            return writes.execute(*command)
        client: Any = self.target.client
        if not self.target.cluster:  # the in-process Redis
            return client.execute_command(*command)
        try:  # to the key's node, with no retry of redis-py's
            return client.execute_command(*command, target_nodes=client.get_node_from_key(key))
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if never_sent(exc):
                raise
            raise unconfirmed(exc) from None

    def run_pipelined(self, calls: Sequence[ScriptCall[R]], *, in_order: bool = False) -> list[R]:
        """Run ``calls`` in one round trip (a pipeline, not a transaction: on a Redis
        Cluster each node is sent its share; calls not ``in_order`` go straight to their
        nodes, ``pipeline_on_nodes``, and must be safe to repeat) and parse their
        replies, in order.

        Calls refused with NOSCRIPT did not run: their scripts are loaded and they are
        sent again (after a Redis restart, redis-py retries a pipeline on a new
        connection without loading its scripts). ``in_order``: the calls must run in
        order (pushes), so the refused ones must be the last ones; otherwise nothing
        more is sent. Any other error reply is raised (the first)."""
        replies: list[Any] = [None] * len(calls)
        waiting = list(range(len(calls)))
        client = self.target.client
        for _ in range(SCRIPT_RELOADS):
            if in_order:  # pushes: sent once, by redis-py's routing
                pipe: Any = client.pipeline(transaction=False)
                for index in waiting:  # EVALSHA as is: a Script would ask SCRIPT EXISTS first
                    pipe.execute_command(*self.command(calls[index]))
                results = pipe.execute(raise_on_error=False)
            else:  # calls safe to repeat: straight to their nodes on a cluster
                sent = [(calls[i].keys()[0], self.command(calls[i])) for i in waiting]
                results = pipeline_on_nodes(self.target, sent)
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

    def run_each_beside(
        self, pairs: Sequence[tuple[tuple[Any, ...] | None, ScriptCall[R]]]
    ) -> list[tuple[Any, R | Exception]]:
        """Each pair's command (a command on one key, its first argument; or none) and
        then its call, all in one round trip (a pipeline, not a transaction: each call
        runs whatever its command replied; on a Redis Cluster a pipeline to each node,
        ``pipeline_on_nodes``: both must be safe to repeat). Returns for each pair the
        command's reply (None without one) and the call's parsed reply; error replies
        come back as their exceptions, not raised. A call refused with NOSCRIPT did not
        run: it runs then, on its own (``run``). A connection error is raised. Every
        command goes first: on a Redis Cluster too, where they are on another node than
        the calls, none of the calls has run when a command's node cannot be reached."""
        commands = [(command[1], command) for command, _ in pairs if command is not None]
        calls = [(call.keys()[0], self.command(call)) for _, call in pairs]
        sent: list[tuple[str, tuple[Any, ...]]] = [*commands, *calls]
        replied = pipeline_on_nodes(self.target, sent)
        before_replies, replies = iter(replied[: len(commands)]), iter(replied[len(commands) :])
        results: list[tuple[Any, R | Exception]] = []
        for command, call in pairs:
            before = None if command is None else next(before_replies)
            reply = next(replies)
            parsed: R | Exception
            if isinstance(reply, redis.exceptions.NoScriptError):
                try:
                    parsed = self.run(call)
                except redis.exceptions.ResponseError as error:
                    parsed = error
            else:
                parsed = reply if isinstance(reply, Exception) else call.parse(reply)
            results.append((before, parsed))
        return results

    def run_then(self, call: ScriptCall[R], commands: Sequence[tuple[Any, ...]]) -> R:
        """``call`` and then ``commands`` in one round trip: a pipeline on one connection,
        so they run in that order (not on a Redis Cluster, whose nodes each run their
        share), and not a transaction (the commands run whatever the call replied). The
        call's reply; an error reply, the call's or a command's, is raised (the first).
        The script is loaded before its first such pipeline; a NOSCRIPT still met (the
        cache flushed since) says the call alone did not run: it runs then, after the
        commands."""
        if call.SCRIPT not in self._loaded:
            self._reload(call)
            self._loaded.add(call.SCRIPT)
        pipe: Any = self.target.client.pipeline(transaction=False)
        pipe.execute_command(*self.command(call))
        for command in commands:
            pipe.execute_command(*command)
        first, *after = pipe.execute(raise_on_error=False)
        raise_first(after)
        if isinstance(first, redis.exceptions.NoScriptError):
            self._loaded.discard(call.SCRIPT)
            return self.run(call)
        if isinstance(first, Exception):
            raise first
        return call.parse(first)

    def run_after(self, commands: Sequence[tuple[Any, ...]], call: ScriptCall[R]) -> R:
        """``commands`` and then ``call`` in one MULTI/EXEC transaction, sent once (see
        ``run_once``; not on a Redis Cluster); the call's reply.

        An error reply of a command is raised (the first); one of the call, after the
        commands ran, is RefusedAfter; a transaction refused while queued (EXECABORT,
        e.g. OOM) applied nothing. A NOSCRIPT at EXEC (the
        script cache flushed after redis-py's pipeline loaded it) says the call alone
        did not run: it runs then, on its own."""
        writes = self._writes()
        if writes is not None:
            pipe = writes.pipeline(transaction=True)
        else:  # the in-process Redis
            pipe = self.target.client.pipeline(transaction=True)
        for command in commands:
            pipe.execute_command(*command)
        if call.SCRIPT not in self._loaded:  # once: redis-py would ask before every EXEC
            self._reload(call)
            self._loaded.add(call.SCRIPT)
        keys = call.keys()
        pipe.execute_command("EVALSHA", self.sha(call), len(keys), *keys, *call.argv())
        try:
            results = pipe.execute(raise_on_error=False)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            if writes is None or never_sent(exc):
                raise
            raise unconfirmed(exc) from None
        *before, last = results
        for result in before:
            if isinstance(result, Exception):
                raise result
        if isinstance(last, redis.exceptions.NoScriptError):
            self._loaded.discard(call.SCRIPT)
            return self.run_once(call)
        if isinstance(last, Exception):
            raise RefusedAfter(last)
        return call.parse(last)


def _send(command: tuple[Any, ...], client: Any) -> Any:
    """``command`` on ``client`` (EVALSHA routed by its keys on a cluster client)."""
    return client.execute_command(*command)
