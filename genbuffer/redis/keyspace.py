"""A generation's keys as they are: which exist, their type, length, TTL and memory."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from genbuffer import keys
from genbuffer.redis.connection import RedisTarget, redis_errors, text

__all__ = ["KeyInfo", "Keyspace"]


@dataclass(frozen=True)
class KeyInfo:
    """One key: type, length (LLEN or HLEN), TTL in seconds (-1 none), memory in bytes.

    A plain dataclass (the inspect-generation document holds it as it is)."""

    key: str
    type: str
    length: int
    ttl: int
    memory_bytes: int | None


class Keyspace:
    """Plain reads (and deletes) of keys, for inspection, the smoke test and the prefix check."""

    def __init__(self, target: RedisTarget) -> None:
        self.target = target

    def durability(self) -> dict[str, str] | None:
        """The server's eviction policy and persistence (`maxmemory-policy`, `save`,
        `aof_enabled`); None where CONFIG or INFO is refused (managed servers, the
        in-process Redis)."""
        with redis_errors(self.target.url):
            try:
                config = self.target.client.config_get("maxmemory-policy")
                config.update(self.target.client.config_get("save"))
                persistence = self.target.client.info("persistence")
            except redis.exceptions.ResponseError:
                return None
        return {
            "maxmemory-policy": str(config.get("maxmemory-policy", "")),
            "save": str(config.get("save", "")),
            "aof_enabled": str(persistence.get("aof_enabled", "0")),
        }

    def generation_keys(
        self, organization_id: int, generation_id: int, scenario_id: int | None = None
    ) -> list[str]:
        """Every existing buffer key of a generation; SCANs scenarios when none is given."""
        candidates: list[str] = []
        with redis_errors(self.target.url):
            if scenario_id is not None:
                chunks = keys.chunks_key(
                    organization_id, generation_id, scenario_id, self.target.prefix
                )
                candidates = [chunks, keys.meta_key(chunks)]
            else:
                chunks = keys.chunks_key(organization_id, generation_id, None, self.target.prefix)
                candidates = [chunks, keys.meta_key(chunks)]
                pattern = keys.scenario_scan_pattern(
                    organization_id, generation_id, self.target.prefix
                )
                for raw in self.target.client.scan_iter(match=pattern, count=1000):
                    found = text(raw)
                    parts = keys.parse_chunks_key(found, self.target.prefix)
                    if parts and parts.generation_id == generation_id:
                        candidates.append(found)  # as SCAN returned it: never prefixed again
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
