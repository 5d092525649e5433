<?php
// Pushes generations into a Redis Cluster the way the Laravel app does on a cluster
// connection: phpredis RedisCluster with the connection prefix (OPT_PREFIX), untagged
// keys as named, RPUSH + EXPIRE on the first push, then HINCRBY/HSET on the meta hash
// (which lands in another slot than the list). With "tagged", the snippet of
// docs/design.md for producers that can change: the key wrapped in a hash tag, list and meta in one slot.
// usage: php cluster_producer.php SEEDS PREFIX ORG GEN_FIRST GEN_COUNT TTL meta|nometa|tagged CHUNKS_FILE [finish]
// SEEDS is host:port[,host:port…]; CHUNKS_FILE holds one base64 chunk a line.
[$_, $seeds, $prefix, $org, $first, $count, $ttl, $mode, $file] = $argv;
$finish = ($argv[9] ?? '') === 'finish';

$redis = new RedisCluster(null, explode(',', $seeds), 2.0, 2.0);
$redis->setOption(Redis::OPT_PREFIX, $prefix);   // what Laravel's PhpRedisConnector does

$chunks = array_map(fn ($line) => base64_decode($line, true), file($file, FILE_IGNORE_NEW_LINES));
for ($gen = (int) $first; $gen < (int) $first + (int) $count; $gen++) {
    $name = "app:scenario_planning:org:{$org}:generation:{$gen}:chunks";
    $key = $mode === 'tagged' ? '{' . $name . '}' : $name;
    foreach ($chunks as $chunk) {
        $length = $redis->rPush($key, $chunk);
        if ($length === 1) {
            $redis->expire($key, (int) $ttl);
        }
        if ($mode !== 'nometa') {
            $redis->hIncrBy("{$key}:meta", 'chunk_count', 1);
            $redis->hIncrBy("{$key}:meta", 'bytes', strlen($chunk));
            $redis->hSet("{$key}:meta", 'last_chunk_at', gmdate('Y-m-d\TH:i:s\Z'));
            if ($length === 1) {
                $redis->expire("{$key}:meta", (int) $ttl);
            }
        }
    }
    if ($finish) {
        $redis->hSet("{$key}:meta", 'finished_at', gmdate('Y-m-d\TH:i:s\Z'));
    }
    fwrite(STDOUT, $prefix . $key . "\n");
}
