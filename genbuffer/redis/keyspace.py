"""A generation's keys as they are: which exist, their type, length, TTL and memory."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from genbuffer import keys
from genbuffer.redis.connection import RedisTarget, redis_errors, text
from genbuffer.redis.layout import layout_of

__all__ = ["CLUSTER_SLOTS", "ClusterShape", "KeyInfo", "Keyspace", "PrimaryShape"]

CLUSTER_SLOTS = 16384  # hash slots of every Redis Cluster


@dataclass(frozen=True)
class KeyInfo:
    """One key: type, length (LLEN or HLEN), TTL in seconds (-1 none), memory in bytes.

    A plain dataclass (the inspect-generation document holds it as it is)."""

    key: str
    type: str
    length: int
    ttl: int
    memory_bytes: int | None


@dataclass
class PrimaryShape:
    """One primary of a cluster: how many slots it serves, and its replicas."""

    slots: int = 0
    replicas: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ClusterShape:
    """A Redis Cluster as its slot map says: state, primaries (by "host:port", with
    their slots and replicas), and how many of the 16384 slots are served."""

    state: str
    slots_covered: int
    primaries: dict[str, PrimaryShape]

    @property
    def replicas(self) -> int:
        """Replicas across every primary."""
        return sum(len(p.replicas) for p in self.primaries.values())

    def summary(self) -> str:
        """One line: `ok: 3 primaries, 3 replicas, 16384/16384 slots`."""
        return (
            f"{self.state}: {len(self.primaries)} primaries, {self.replicas} replicas, "
            f"{self.slots_covered}/{CLUSTER_SLOTS} slots"
        )


class Keyspace:
    """Plain reads (and deletes) of keys, for inspection, the smoke test and the prefix check."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target

    def durability(self) -> dict[str, str] | None:
        """The server's eviction policy and persistence (`maxmemory-policy`, `save`,
        `aof_enabled`); None where CONFIG or INFO is refused (managed servers, the
        in-process Redis)."""
        client: Any = self.target.client
        # on a cluster each primary holds its own buffers: the weakest one is reported
        nodes = client.get_primaries() if self.target.cluster else [None]
        found: list[dict[str, str]] = []
        with redis_errors(self.target.url):
            try:
                for node in nodes:
                    where = {} if node is None else {"target_nodes": node}
                    config = client.config_get("maxmemory-policy", **where)
                    config.update(client.config_get("save", **where))
                    persistence = client.info("persistence", **where)
                    found.append(
                        {
                            "maxmemory-policy": str(config.get("maxmemory-policy", "")),
                            "save": str(config.get("save", "")),
                            "aof_enabled": str(persistence.get("aof_enabled", "0")),
                        }
                    )
            except redis.exceptions.ResponseError:
                return None
        evicting = [f for f in found if f["maxmemory-policy"] != "noeviction"]
        volatile = [f for f in found if f["aof_enabled"] != "1" and not f["save"]]
        return (evicting or volatile or found)[0]

    def generation_keys(
        self, organization_id: int, generation_id: int, scenario_id: int | None = None
    ) -> list[str]:
        """Every existing buffer key of a generation; SCANs scenarios when none is given."""
        candidates: list[str] = []
        with redis_errors(self.target.url):
            for tagged in (False, True):
                chunks = keys.chunks_key(
                    organization_id, generation_id, scenario_id, self.target.prefix, tagged=tagged
                )
                candidates += [chunks, keys.meta_key(chunks)]
            if scenario_id is None:
                pattern = keys.scenario_scan_pattern(
                    organization_id, generation_id, self.target.prefix
                )
                for raw in self.target.client.scan_iter(match=pattern, count=1000):
                    found = text(raw)
                    parts = keys.parse_chunks_key(found, self.target.prefix)
                    if parts and parts.generation_id == generation_id:
                        candidates.append(found)  # as SCAN returned it: never prefixed again
            # every hash of each list's layout (beside a split list, genbuf's own too)
            candidates += [
                name
                for chunks in candidates
                if not chunks.endswith(keys.META_SUFFIX)
                for name in layout_of(self.target, chunks).hashes(chunks)
            ]
            pipe = self.target.client.pipeline(transaction=False)
            for key in candidates:
                pipe.exists(key)
            present = pipe.execute()
        return sorted({key for key, there in zip(candidates, present, strict=True) if there})

    def describe(self, key_names: list[str]) -> list[KeyInfo]:
        """Type, length, TTL and memory of each key."""
        infos: list[KeyInfo] = []
        with redis_errors(self.target.url):
            for key in key_names:
                kind = text(self.target.client.type(key))
                length = {"list": self.target.client.llen, "hash": self.target.client.hlen}.get(
                    kind
                )
                try:
                    memory = self.target.client.memory_usage(key)
                except redis.exceptions.ResponseError:
                    memory = None  # MEMORY USAGE disabled or unsupported
                infos.append(
                    KeyInfo(
                        key=key,
                        type=kind,
                        length=int(length(key)) if length else 0,
                        ttl=int(self.target.client.ttl(key)),
                        memory_bytes=None if memory is None else int(memory),
                    )
                )
        return infos

    def delete(self, key_names: list[str]) -> int:
        """Delete the given keys as they are; returns how many existed."""
        if not key_names:
            return 0
        with redis_errors(self.target.url):
            return int(self.target.client.delete(*key_names))

    def list_length(self, key: str) -> int:
        """LLEN of a chunks list (0 when it does not exist)."""
        with redis_errors(self.target.url):
            return int(self.target.client.llen(key))

    def ttl_of(self, key: str) -> int:
        """TTL of a key in seconds (-1 no expiry, -2 no such key)."""
        with redis_errors(self.target.url):
            return int(self.target.client.ttl(key))

    def existing_keys(self, names: list[str]) -> list[str]:
        """Those of ``names`` that exist, in one round trip."""
        with redis_errors(self.target.url):
            pipe = self.target.client.pipeline(transaction=False)
            for name in names:
                pipe.exists(name)
            return [name for name, there in zip(names, pipe.execute(), strict=True) if there]

    def cluster_shape(self) -> ClusterShape | None:
        """The cluster's shape (CLUSTER SLOTS and CLUSTER INFO); None on a single server."""
        if not self.target.cluster:
            return None
        primaries: dict[str, PrimaryShape] = {}
        covered = 0
        client: Any = self.target.client  # a RedisCluster (typed as Redis: RedisTarget)
        with redis_errors(self.target.url):
            ranges = client.cluster_slots()
            info = client.cluster_info()
        for (first, last), served in sorted(ranges.items()):
            host, port = served["primary"][:2]
            shape = primaries.setdefault(f"{text(host)}:{port}", PrimaryShape())
            shape.slots += last - first + 1
            for replica in served["replicas"]:
                name = f"{text(replica[0])}:{replica[1]}"
                if name not in shape.replicas:
                    shape.replicas.append(name)
            covered += last - first + 1
        return ClusterShape(str(info.get("cluster_state", "?")), covered, primaries)

    def slots(self, names: list[str]) -> list[int]:
        """The cluster hash slot of each key (CLUSTER KEYSLOT, asked of the server)."""
        with redis_errors(self.target.url):
            client: Any = self.target.client  # a RedisCluster (typed as Redis: RedisTarget)
            return [int(client.cluster_keyslot(name)) for name in names]

    def exists(self, key: str) -> bool:
        """Whether the key exists."""
        with redis_errors(self.target.url):
            return bool(self.target.client.exists(key))

    def ping(self) -> None:
        """Raise RedisUnavailable unless the server answers."""
        with redis_errors(self.target.url):
            self.target.client.ping()

    def server(self) -> tuple[str, float, datetime]:
        """The server's version, a PING's round trip (seconds) and its clock (TIME)."""
        with redis_errors(self.target.url):
            started = time.perf_counter()
            self.target.client.ping()
            latency = time.perf_counter() - started
            try:
                version = str(self.target.client.info("server").get("redis_version", "?"))
            except redis.exceptions.ResponseError:  # INFO refused (the in-process Redis)
                version = "unknown"
            seconds, micros = self.target.client.time()
        clock = datetime.fromtimestamp(int(seconds) + int(micros) / 1e6, UTC)
        return version, latency, clock
