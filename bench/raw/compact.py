"""The raw baseline of a whole compaction process: what a hand-written script would do.

Lock the row, read the whole list, join, write the artifact (base64), its metadata
and one backup row per chunk, commit, then trim the list. Usage:
    python bench/raw/compact.py REDIS_URL PG_DSN KEY GENERATION_ID
"""

import base64
import json
import sys

import psycopg
import redis

redis_url, dsn, key, generation = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = redis.Redis.from_url(redis_url)
with psycopg.connect(dsn) as pg, pg.transaction():
    row = pg.execute(
        "SELECT organization_id FROM scenario_generations WHERE id = %s FOR UPDATE", (generation,)
    ).fetchone()
    if row is None:
        sys.exit(1)
    chunks = client.lrange(key, 0, -1)
    data = b"".join(chunks)
    pg.execute(
        "UPDATE scenario_generations SET compacted = %s, chunk_count = %s, "
        "compacted_at = now(), metadata = %s::jsonb WHERE id = %s",
        (
            base64.b64encode(data).decode(),
            len(chunks),
            json.dumps({"chunk_count": len(chunks), "bytes": len(data)}),
            generation,
        ),
    )
    with pg.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO generation_chunks (organization_id, generation_id, seq, content) "
            "VALUES (%s, %s, %s, %s)",
            [(row[0], generation, seq, chunk) for seq, chunk in enumerate(chunks)],
        )
client.ltrim(key, len(chunks), -1)
