"""The raw baseline of `genbuf push`: stdin lines into a list, pipelined variadic RPUSH.

Usage: python bench/raw/push.py REDIS_URL KEY < lines
"""

import sys

import redis

client = redis.Redis.from_url(sys.argv[1])
key = sys.argv[2]
pipe = client.pipeline(transaction=False)
batch: list[bytes] = []
for line in sys.stdin.buffer:
    batch.append(line)
    if len(batch) == 1000:
        pipe.rpush(key, *batch)
        batch = []
        if len(pipe) >= 50:
            pipe.execute()
if batch:
    pipe.rpush(key, *batch)
pipe.execute()
