<?php

declare(strict_types=1);

namespace Genbuffer\Laravel;

use DateTimeImmutable;
use DateTimeZone;
use Genbuffer\Laravel\Exceptions\GenbufferException;

/**
 * The producer side of genbuf's protocol: push chunks into a generation's buffer with the
 * one push script genbuf ships (genbuffer/lua/push.lua, step 'push': the list, the meta
 * hash's chunk_count, bytes, first_chunk_at, last_chunk_at, ids and TTLs, atomically),
 * mark it finished (its step 'finish') and announce it to `genbuf worker`.
 */
final class GenerationBuffer
{
    public const PUSH_BATCH = 1000;  // chunks per script call, as genbuf's push_many
    public const EVENTS_MAX_LENGTH = 100000;  // genbuffer.redis.events.MAX_LENGTH

    public readonly Keys $keys;

    public function __construct(
        private readonly RedisDriver $redis,
        string $prefix = '',
        private readonly int $ttl = 86400,
        bool $tagged = false,
    ) {
        if ($ttl < 1) {
            throw new GenbufferException("GENERATION_CHUNK_TTL must be positive, got {$ttl}");
        }
        if ($redis->cluster() && !$tagged) {
            throw new GenbufferException('on a Redis Cluster set GENERATION_KEY_TAGS=true (for '
                . 'genbuf too): a push writes the list and its meta hash in one script, '
                . 'which needs both in one slot');
        }
        $this->keys = new Keys($prefix, $tagged);
    }

    /** The raw-command driver (for what the package has no method for). */
    public function redis(): RedisDriver
    {
        return $this->redis;
    }

    /**
     * Append one chunk. With $seq (the chunk's 0-based position in the stream) the push is
     * idempotent: a retry of a chunk already appended is skipped.
     *
     * @return array{length: int, appended: int, skipped: int}
     */
    public function push(int $org, int $gen, string $chunk, ?int $seq = null, ?int $scenario = null): array
    {
        return $this->pushMany($org, $gen, [$chunk], $seq, $scenario);
    }

    /**
     * Append chunks in order, PUSH_BATCH a script call. With $seq (the first chunk's
     * position) the chunks are numbered $seq, $seq + 1, …, and a retried call appends
     * only what did not arrive.
     *
     * @param iterable<string> $chunks
     * @return array{length: int, appended: int, skipped: int}
     */
    public function pushMany(int $org, int $gen, iterable $chunks, ?int $seq = null, ?int $scenario = null): array
    {
        if ($seq !== null && $seq < 0) {
            throw new GenbufferException("seq must be 0 or more, got {$seq}");
        }
        $key = $this->keys->chunks($org, $gen, $scenario);
        $total = ['length' => 0, 'appended' => 0, 'skipped' => 0];
        $batch = [];
        $position = $seq;
        $send = function () use (&$batch, &$position, &$total, $key, $org, $gen, $scenario): void {
            $bytes = array_sum(array_map('strlen', $batch));
            // push.lua's ARGV: step, ttl, now, ids, seq, bytes, two fields of other steps
            [$length, $appended, $skipped] = $this->redis->script('push', [$key, Keys::meta($key)], [
                'push', $this->ttl, self::now(), $org, $scenario ?? '', $gen,
                $position === null ? '' : $position, $bytes, '', '', ...$batch,
            ]);
            $total['length'] = (int) $length;
            $total['appended'] += (int) $appended;
            $total['skipped'] += (int) $skipped;
            if ($position !== null) {
                $position += count($batch);
            }
            $batch = [];
        };
        foreach ($chunks as $chunk) {
            $batch[] = (string) $chunk;
            if (count($batch) === self::PUSH_BATCH) {
                $send();
            }
        }
        if ($batch !== []) {
            $send();
        }

        return $total;
    }

    /**
     * Mark the stream finished (`finished_at`) and announce it to `genbuf worker`, which
     * compacts it without waiting for it to go idle. Returns the chunks key.
     */
    public function finish(int $org, int $gen, ?int $scenario = null): string
    {
        $key = $this->keys->chunks($org, $gen, $scenario);
        // push.lua's step 'finish', as genbuf's finish(): finished_at and its TTL, only
        // where the list or its meta hash exists (a finish() retried after its
        // announcement failed must not bring back a meta hash a compaction deleted)
        $this->redis->script('push', [$key, Keys::meta($key)], [
            'finish', $this->ttl, self::now(), $org, $scenario ?? '', $gen, '', '', '', '',
        ]);
        $this->announce($org, $gen, $scenario, $key);

        return $key;
    }

    /** Add a buffer to the worker stream (the fields genbuffer.redis.events reads). */
    public function announce(int $org, int $gen, ?int $scenario = null, ?string $key = null): string
    {
        $stream = $this->keys->events();
        $fields = ['org', Keys::id($org, 'organization id'), 'gen', Keys::id($gen, 'generation id'),
            'idle', 0];
        if ($scenario !== null) {
            array_push($fields, 'scenario', Keys::id($scenario, 'scenario id'));
        }
        if ($key !== null) {
            array_push($fields, 'key', $key);
        }
        $id = $this->redis->command($stream, ['XADD', $stream, 'MAXLEN', '~',
            self::EVENTS_MAX_LENGTH, '*', ...$fields]);
        $this->redis->command($stream, ['EXPIRE', $stream, $this->ttl]);

        return (string) $id;
    }

    /** Now as genbuf writes it: ISO 8601 UTC with microseconds. */
    public static function now(): string
    {
        return (new DateTimeImmutable('now', new DateTimeZone('UTC')))->format('Y-m-d\TH:i:s.u\Z');
    }
}
