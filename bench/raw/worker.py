"""The raw baseline of `genbuf worker`: the same I/O, hand-written.

Reads the compaction-events stream in its own consumer group (XREADGROUP, a batch
at a time), and for each entry: LRANGE the list, one UPDATE of the row (artifact,
counters, compacted_at = now()) in its own transaction, DEL the list and its meta
hash, XACK. No lock, no validation, no positions: the floor genbuf's worker is
measured against. Stops on SIGTERM. Usage:
    python bench/raw/worker.py REDIS_URL|cluster:host:port PG_DSN STREAM GROUP NAME
"""

import base64
import signal
import sys

import psycopg
import redis

target, dsn, stream, group, name = sys.argv[1:6]
if target.startswith("cluster:"):
    host, port = target.removeprefix("cluster:").rsplit(":", 1)
    client = redis.RedisCluster(host=host, port=int(port))
else:
    client = redis.Redis.from_url(target)
stopping: list[int] = []
signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
with psycopg.connect(dsn) as pg:
    client.ping()
    print(f"raw worker {name}: waiting for events", file=sys.stderr, flush=True)
    while not stopping:
        reply = client.xreadgroup(group, name, {stream: ">"}, count=8, block=200)
        for _, entries in reply or []:
            for entry, fields in entries:
                key = fields[b"key"].decode()
                gen = int(fields[b"generation_id"])
                chunks = client.lrange(key, 0, -1)
                data = b"".join(chunks)
                with pg.transaction():
                    pg.execute(
                        "UPDATE scenario_generations SET compacted = %s, chunk_count = %s, "
                        "compacted_at = now(), compacted_by = 'raw' WHERE id = %s",
                        (base64.b64encode(data).decode(), len(chunks), gen),
                    )
                client.delete(key)
                client.delete(key + ":meta")
                client.xack(stream, group, entry)
