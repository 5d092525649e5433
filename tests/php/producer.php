<?php
// Pushes a generation the way the Laravel app's GenerationRedisBuffer does through the
// Redis facade with phpredis: the connection prefix (OPT_PREFIX), RPUSH, EXPIRE on the
// first push, then HINCRBY/HSET on the meta hash, only the HINCRBY counter, or no meta
// hash at all.
// usage: php producer.php HOST PORT PREFIX ORG GEN SCENARIO|- TTL meta|counter|nometa CHUNKS_FILE
// CHUNKS_FILE holds one base64 chunk a line, so any bytes can be sent.
[$_, $host, $port, $prefix, $org, $gen, $scenario, $ttl, $mode, $file] = $argv;

$redis = new Redis();
$redis->connect($host, (int) $port);
$redis->setOption(Redis::OPT_PREFIX, $prefix);   // what Laravel's PhpRedisConnector does

$key = "app:scenario_planning:org:{$org}:" . ($scenario === '-' ? '' : "scenario:{$scenario}:")
    . "generation:{$gen}:chunks";
$count = 0;
foreach (file($file, FILE_IGNORE_NEW_LINES) as $line) {
    $chunk = base64_decode($line, true);
    $length = $redis->rPush($key, $chunk);
    if ($length === 1) {
        $redis->expire($key, (int) $ttl);
    }
    if ($mode === 'counter') {
        $redis->hIncrBy("{$key}:meta", 'chunk_count', 1);
    }
    if ($mode === 'meta') {
        $redis->hIncrBy("{$key}:meta", 'chunk_count', 1);
        $redis->hIncrBy("{$key}:meta", 'bytes', strlen($chunk));
        $redis->hSet("{$key}:meta", 'last_chunk_at', gmdate('Y-m-d\TH:i:s\Z'));
        if ($length === 1) {
            $redis->expire("{$key}:meta", (int) $ttl);
        }
    }
    $count++;
}
fwrite(STDOUT, $prefix . $key . "\n" . $count . "\n");
