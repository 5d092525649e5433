"""The raw baseline of `genbuf status`: the same reads, hand-written.

SCAN the prefix's buffer keys a page at a time (COUNT 1000), one EXISTS per meta
hash (is its list there?), one pipelined round trip per page (LLEN, HMGET, PTTL of
both keys, OBJECT IDLETIME, MEMORY USAGE of both keys), one query per page for which
rows exist, and counters. Usage:
    python bench/raw/status.py REDIS_URL PG_DSN PREFIX
"""

import sys
from collections import Counter

import psycopg
import redis

redis_url, dsn, prefix = sys.argv[1], sys.argv[2], sys.argv[3]
client = redis.Redis.from_url(redis_url)
fields = ("finished_at", "last_chunk_at", "first_chunk_at", "quarantined_at", "orphaned_at")
pattern = prefix.replace(":", "\\:") + "app\\:scenario_planning\\:org\\:*"
states: Counter[str] = Counter()
totals = {"chunks": 0, "memory": 0}
QUERY = "SELECT id, organization_id FROM scenario_generations WHERE id = ANY(%s)"


def page(names: list[bytes], pg: psycopg.Connection) -> None:
    lists = [n for n in names if not n.endswith(b":meta")]
    metas = [n.removesuffix(b":meta") for n in names if n.endswith(b":meta")]
    pipe = client.pipeline(transaction=False)
    for name in metas:  # a meta hash alone is a buffer too
        pipe.exists(name)
    lists += [name for name, there in zip(metas, pipe.execute(), strict=True) if not there]
    pipe = client.pipeline(transaction=False)
    for name in lists:
        pipe.llen(name)
        pipe.hmget(name + b":meta", fields)
        pipe.pttl(name)
        pipe.pttl(name + b":meta")
        pipe.object("idletime", name)
        pipe.memory_usage(name, samples=5)
        pipe.memory_usage(name + b":meta")
    replies = pipe.execute()
    ids = [int(name.split(b":generation:")[1].split(b":")[0]) for name in lists]
    rows = dict(
        pg.execute(
            "SELECT id, organization_id FROM scenario_generations WHERE id = ANY(%s)", (ids,)
        ).fetchall()
    )
    for index, gen in enumerate(ids):
        length, meta, _, _, _, m1, m2 = replies[7 * index : 7 * index + 7]
        totals["chunks"] += length
        totals["memory"] += (m1 or 0) + (m2 or 0)
        states["orphaned" if gen not in rows else "finished" if meta[0] else "streaming"] += 1


with psycopg.connect(dsn) as pg:
    batch: list[bytes] = []
    for key in client.scan_iter(match=pattern, count=1000):
        batch.append(key)
        if len(batch) == 1000:
            page(batch, pg)
            batch = []
    if batch:
        page(batch, pg)
print(dict(states), totals)
