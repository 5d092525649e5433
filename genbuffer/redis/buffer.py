"""GenerationBuffer: the producer API, with the other jobs on the same connection beside it.

``GenerationBuffer.from_settings(settings).push_chunk(...)`` is the library's
entry point for producers. Compaction, discovery and inspection use the parts
it carries: ``protocol`` (snapshot, read, acknowledge, set aside), ``scan``
(find buffers), ``keyspace`` (keys as they are), ``survey`` (every buffer's
facts, for status and metrics) and ``fleet`` (the workers' heartbeats).
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, cast

import redis

from genbuffer.errors import UsageError
from genbuffer.redis.connection import NoTouch, RedisTarget, connect_cluster, connect_redis
from genbuffer.redis.keyspace import Keyspace
from genbuffer.redis.producer import Producer
from genbuffer.redis.protocol import CompactionProtocol
from genbuffer.settings import Settings

if TYPE_CHECKING:
    from genbuffer.redis.fleet import Fleet
    from genbuffer.redis.scan import Scanner
    from genbuffer.redis.survey import Survey
    from genbuffer.redis.tail import Tailer

__all__ = ["GenerationBuffer"]


class GenerationBuffer(Producer):
    """Generation buffers in one Redis database, under one key prefix."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        url: str = "",
        prefix: str = "",
        ttl: int = 86400,
        max_len: int | None = None,
        app_name: str | None = None,
        cluster: bool = False,
        tagged: bool = False,
        no_touch: NoTouch | None = None,
    ) -> None:
        cluster = cluster or isinstance(client, redis.RedisCluster)
        if cluster and ("{" in prefix or "}" in prefix):
            raise UsageError(
                f"REDIS_PREFIX {prefix!r} holds a brace: on a Redis Cluster only the first "
                "{…} of a key is hashed, so every buffer would land in one slot",
                hint="use a prefix without { and }",
            )
        target = RedisTarget(
            client,
            url=url,
            prefix=prefix,
            app_name=app_name,
            cluster=cluster,
            no_touch=no_touch or NoTouch(),
        )
        super().__init__(target, ttl=ttl, max_len=max_len, tagged=tagged)
        self.protocol = CompactionProtocol(target, ttl=ttl, clock=self.clock)
        self.keyspace = Keyspace(target)

    @classmethod
    def from_settings(cls, settings: Settings) -> GenerationBuffer:
        """Connect to the configured Redis with the configured prefix, TTL and alert length."""
        url = settings.effective_redis_url()
        nodes = settings.cluster_nodes()
        no_touch = NoTouch()
        if nodes:
            password = settings.redis_password
            # RedisCluster has the command API of Redis (redis-py's command mixins):
            # typed as Redis, so that one code path serves both
            client = cast(
                redis.Redis,
                connect_cluster(
                    nodes,
                    username=settings.redis_username,
                    password=None if password is None else password.get_secret_value(),
                    tls=settings.cluster_tls(),
                    timeout=settings.redis_socket_timeout,
                    no_touch=no_touch,
                ),
            )
        else:
            client = connect_redis(url, settings.redis_socket_timeout, no_touch)
        return cls(
            client,
            url=url,
            prefix=settings.effective_redis_prefix(),
            ttl=settings.generation_chunk_ttl,
            max_len=settings.generation_chunk_max_len,
            app_name=settings.app_name,
            cluster=bool(nodes),
            tagged=settings.generation_key_tags,
            no_touch=no_touch,
        )

    @cached_property
    def scan(self) -> Scanner:
        """Discovery of buffers under the prefix (compact-pending, the sweeper, checks)."""
        from genbuffer.redis.scan import Scanner  # noqa: PLC0415  (a compaction never scans)

        return Scanner(self.target, ttl=self.ttl)

    @cached_property
    def survey(self) -> Survey:
        """Every buffer with its lengths, TTLs and memory (status, metrics)."""
        from genbuffer.redis.survey import Survey  # noqa: PLC0415  (status and metrics only)

        return Survey(self.target)

    @cached_property
    def fleet(self) -> Fleet:
        """The worker fleet's heartbeats (worker, status, metrics, doctor)."""
        from genbuffer.redis.fleet import Fleet  # noqa: PLC0415  (the worker's side only)

        return Fleet(self.target)

    @cached_property
    def tailer(self) -> Tailer:
        """Position-based reads of a growing buffer (tail)."""
        from genbuffer.redis.tail import Tailer  # noqa: PLC0415  (tail only)

        return Tailer(self.target)

    @property
    def client(self) -> redis.Redis:
        """The redis-py client (for what genbuffer has no method for)."""
        return self.target.client

    @property
    def url(self) -> str:
        """The Redis URL (show it with ``settings.mask_url``)."""
        return self.target.url

    @property
    def prefix(self) -> str:
        """The key prefix every key of this buffer starts with."""
        return self.target.prefix

    @property
    def app_name(self) -> str | None:
        """Laravel's APP_NAME, which names the prefix rule in hints."""
        return self.target.app_name

    def close(self) -> None:
        """Close the producer's connections and the client's pool."""
        super().close()
        self.target.client.close()
