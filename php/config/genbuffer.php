<?php

/*
 * genbuffer's Laravel package: published as config/genbuffer.php
 * (php artisan vendor:publish --tag=genbuffer-config).
 * Every value reads the same .env name genbuf reads, so the app and `genbuf` agree.
 */

return [
    // The Laravel Redis connection (config/database.php 'redis') the buffers live on.
    'connection' => env('GENBUF_REDIS_CONNECTION', 'default'),

    // The key prefix. null: the connection's own Laravel prefix (its options.prefix, or
    // database.redis.options.prefix), which is what REDIS_PREFIX or APP_NAME give and
    // what genbuf must be told (REDIS_PREFIX, or REDIS_PREFIX_RULE) to use too.
    'prefix' => env('GENBUF_REDIS_PREFIX'),

    // GENERATION_CHUNK_TTL: seconds a buffer lives, set when its keys are created.
    'ttl' => (int) env('GENERATION_CHUNK_TTL', 86400),

    // GENERATION_KEY_TAGS: the hash-tagged key template ({…chunks}), required on a
    // Redis Cluster so that a push's list and meta hash share a slot.
    'key_tags' => filter_var(env('GENERATION_KEY_TAGS', false), FILTER_VALIDATE_BOOLEAN),

    // Where genbuf's Lua scripts are: the genbuffer/lua directory of the genbuf
    // installation (one source of truth for the protocol). null: the genbuffer/lua
    // directory beside this package in the genbuffer repository.
    'lua_path' => env('GENBUF_LUA_PATH'),

    // The completion stream genbuf writes after every compaction, and the consumer
    // group `php artisan genbuf:listen` reads it with.
    'completions' => [
        'group' => env('GENBUF_COMPLETION_GROUP', 'laravel'),
        // entries delivered to a consumer that died are taken over after this long
        'claim_idle_ms' => (int) env('GENBUF_COMPLETION_CLAIM_IDLE_MS', 300000),
    ],

    // Offloaded artifacts: each object store genbuf writes to or still reads from
    // (GENERATION_OFFLOAD_URL, GENERATION_OFFLOAD_READ_URLS) => the Laravel filesystem
    // disk whose root is that store URL.
    'stores' => array_filter([
        (string) env('GENERATION_OFFLOAD_URL', '') => env('GENBUF_OFFLOAD_DISK'),
    ], static fn ($disk, $url) => $url !== '' && $disk !== null, ARRAY_FILTER_USE_BOTH),
];
