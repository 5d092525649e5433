"""The raw baseline of an offloaded compaction: what a hand-written script would do.

Lock the row, read the list page by page (LRANGE) straight into an obstore upload
(the client genbuf uses, the same part size and concurrency), hashing on the way,
point the row at the object, commit, delete the list. One pass over Redis, where
genbuf makes two (the name of its object is the content's sha256). Usage:
    python bench/raw/offload.py REDIS_URL PG_DSN KEY GENERATION_ID STORE_URL [ENDPOINT]
and, for show-generation's baseline, with READ as GENERATION_ID:
    python bench/raw/offload.py - - - read STORE_URL [ENDPOINT] PATH
"""

import hashlib
import json
import sys

import obstore
import psycopg
import redis
from obstore.store import LocalStore, S3Store

PAGE = 1024 * 1024  # bytes per LRANGE page, as genbuf's offloaded reads
redis_url, dsn, key, generation, store_url = sys.argv[1:6]
endpoint = sys.argv[6] if len(sys.argv) > 6 else ""

if store_url.startswith("s3://"):
    bucket, _, prefix = store_url.removeprefix("s3://").partition("/")
    store = S3Store(
        bucket,
        prefix=prefix or None,
        config={
            "access_key_id": "bench",
            "secret_access_key": "bench",
            "region": "us-east-1",
            "endpoint": endpoint,
        },
        client_options={"allow_http": True},
    )
else:
    store = LocalStore(store_url.removeprefix("file://"))

if generation == "read":  # stream an object to stdout, hashing it
    digest = hashlib.sha256()
    for block in obstore.get(store, sys.argv[7]).stream(min_chunk_size=4 * 1024 * 1024):
        digest.update(block)
        sys.stdout.buffer.write(block)
    sys.exit(0)

client = redis.Redis.from_url(redis_url)
path = f"raw/{generation}"
with psycopg.connect(dsn) as pg, pg.transaction():
    pg.execute("SELECT 1 FROM scenario_generations WHERE id = %s FOR UPDATE", (generation,))
    length = client.llen(key)
    first = client.lrange(key, 0, 0)
    per_page = max(1, PAGE // max(1, len(first[0]) if first else 1))
    digest = hashlib.sha256()
    size = 0
    with obstore.open_writer(store, path, buffer_size=5 * 1024 * 1024, max_concurrency=2) as writer:
        for start in range(0, length, per_page):
            block = b"".join(client.lrange(key, start, start + per_page - 1))
            digest.update(block)
            size += len(block)
            writer.write(block)
    pg.execute(
        "UPDATE scenario_generations SET compacted = %s, chunk_count = %s, "
        "compacted_at = now(), metadata = %s::jsonb WHERE id = %s",
        (
            f"{store_url}/{path}",
            length,
            json.dumps({"bytes": size, "sha256": digest.hexdigest()}),
            generation,
        ),
    )
client.delete(key)
