<?php

declare(strict_types=1);

namespace Genbuffer\Laravel;

use Genbuffer\Laravel\Events\GenerationCompacted;
use Genbuffer\Laravel\Exceptions\GenbufferException;
use Genbuffer\Laravel\Exceptions\RedisCommandFailed;
use Illuminate\Contracts\Events\Dispatcher;

/**
 * Reads genbuf's completion stream (Keys::completions) with a consumer group and
 * dispatches a GenerationCompacted event per entry; an entry is acknowledged (XACK) only
 * after its listeners returned, so a consumer that dies mid-way leaves it pending, and
 * another consumer takes it over after claim_idle_ms (XAUTOCLAIM).
 */
final class CompletionConsumer
{
    public function __construct(
        private readonly RedisDriver $redis,
        private readonly Keys $keys,
        private readonly Dispatcher $events,
        private readonly string $group = 'laravel',
        private readonly int $claimIdleMs = 300000,
    ) {
    }

    /** Create the group (and the stream) unless they exist; the group starts at the
     * oldest entry the stream keeps. */
    public function ensureGroup(): void
    {
        $stream = $this->keys->completions();
        try {
            $this->redis->command($stream, ['XGROUP', 'CREATE', $stream, $this->group, '0', 'MKSTREAM']);
        } catch (RedisCommandFailed $e) {
            if (!str_contains($e->getMessage(), 'BUSYGROUP')) {
                throw $e;
            }
        }
    }

    /**
     * One round: this consumer's own unacknowledged entries, entries another consumer left
     * for claim_idle_ms, then new ones (waiting up to $blockMs). Returns how many events
     * were dispatched; $skipped receives entries that name no generation (acknowledged).
     *
     * @param list<string> $skipped
     */
    public function consume(string $consumer, int $count = 100, int $blockMs = 5000, array &$skipped = []): int
    {
        $this->ensureGroup();
        $stream = $this->keys->completions();
        $done = 0;
        $own = $this->read($consumer, $count, null, '0');
        $done += $this->dispatch($own, $skipped);
        $claimed = $this->redis->command($stream, ['XAUTOCLAIM', $stream, $this->group, $consumer,
            $this->claimIdleMs, '0-0', 'COUNT', $count]);
        $done += $this->dispatch(is_array($claimed) ? self::pairs($claimed[1] ?? []) : [], $skipped);
        $done += $this->dispatch($this->read($consumer, $count, $blockMs, '>'), $skipped);

        return $done;
    }

    /** @return list<array{0: string, 1: array<string, string>}> */
    private function read(string $consumer, int $count, ?int $blockMs, string $from): array
    {
        $stream = $this->keys->completions();
        $args = ['XREADGROUP', 'GROUP', $this->group, $consumer, 'COUNT', $count];
        if ($blockMs !== null) {
            array_push($args, 'BLOCK', $blockMs);
        }
        array_push($args, 'STREAMS', $stream, $from);
        $reply = $this->redis->command($stream, $args);
        if (!is_array($reply) || $reply === []) {
            return [];
        }

        return self::pairs($reply[0][1] ?? []);
    }

    /**
     * @param list<array{0: string, 1: array<string, string>}> $entries
     * @param list<string> $skipped
     */
    private function dispatch(array $entries, array &$skipped): int
    {
        $stream = $this->keys->completions();
        $done = 0;
        foreach ($entries as [$id, $fields]) {
            try {
                $event = self::event($id, $fields);
            } catch (GenbufferException $e) {
                $skipped[] = "{$id}: {$e->getMessage()}";
                $event = null;
            }
            if ($event !== null) {
                $this->events->dispatch($event);
                $done++;
            }
            $this->redis->command($stream, ['XACK', $stream, $this->group, $id]);
        }

        return $done;
    }

    /** One entry's fields as the event (genbuffer.redis.completions documents them). */
    public static function event(string $id, array $fields): GenerationCompacted
    {
        $outcome = $fields['outcome'] ?? '';
        if (!in_array($outcome, ['persisted', 'strict_abort'], true)) {
            throw new GenbufferException('unknown outcome ' . var_export($outcome, true));
        }
        $optional = static fn (string $name) => ($fields[$name] ?? '') === ''
            ? null : Keys::id($fields[$name], $name);

        return new GenerationCompacted(
            organizationId: Keys::id($fields['org'] ?? null, 'org'),
            generationId: Keys::id($fields['gen'] ?? null, 'gen'),
            scenarioId: $optional('scenario'),
            outcome: $outcome,
            validationId: $optional('validation_id'),
            chunkCount: (int) ($fields['chunk_count'] ?? 0),
            bytes: (int) ($fields['bytes'] ?? 0),
            sha256: ($fields['sha256'] ?? '') === '' ? null : $fields['sha256'],
            at: (string) ($fields['at'] ?? ''),
            entryId: $id,
        );
    }

    /**
     * Raw [[id, [field, value, …]], …] as [[id, [field => value]], …]; an entry deleted
     * meanwhile (no fields) is left out.
     *
     * @return list<array{0: string, 1: array<string, string>}>
     */
    private static function pairs(mixed $raw): array
    {
        $out = [];
        foreach (is_array($raw) ? $raw : [] as $entry) {
            if (!is_array($entry) || !is_array($entry[1] ?? null)) {
                continue;
            }
            $flat = array_values($entry[1]);
            $fields = [];
            for ($i = 0; $i + 1 < count($flat); $i += 2) {
                $fields[(string) $flat[$i]] = (string) $flat[$i + 1];
            }
            $out[] = [(string) $entry[0], $fields];
        }

        return $out;
    }
}
