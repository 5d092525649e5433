<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Tests;

use Genbuffer\Laravel\Exceptions\GenbufferException;
use Genbuffer\Laravel\Facades\GenerationBuffer as Buffer;
use Genbuffer\Laravel\GenerationBuffer;
use Genbuffer\Laravel\Keys;

/** Pushing from PHP with genbuf's own Lua scripts, compacting with genbuf. */
final class ProducerTest extends Support
{
    /** @return array<string, array{0: string}> */
    public static function clients(): array
    {
        return ['phpredis' => ['phpredis'], 'predis' => ['predis']];
    }

    public function testKeysAreGenbufsKeys(): void
    {
        $keys = new Keys('laravel_database_');
        self::assertSame('laravel_database_app:scenario_planning:org:12:scenario:7:generation:59:chunks',
            $keys->chunks(12, 59, 7));
        self::assertSame('laravel_database_app:scenario_planning:org:12:generation:59:chunks:meta',
            Keys::meta($keys->chunks(12, 59)));
        self::assertSame('p{app:scenario_planning:org:1:generation:2:chunks}',
            (new Keys('p', true))->chunks(1, 2));
        self::assertSame('laravel_database_app:scenario_planning:compaction-completed', $keys->completions());
        $this->expectException(GenbufferException::class);
        $keys->chunks(0, 1);
    }

    /** @dataProvider clients */
    public function testPushedChunksCompactByteExactAndRetriesAreNotDuplicated(string $client): void
    {
        $app = self::app($client);
        self::assertSame($client, $app->make(GenerationBuffer::class)->redis()->library());
        $gen = self::newGeneration(21, 3);
        // bytes genbuf must keep as they are: a multibyte character split across chunks,
        // a NUL, invalid UTF-8, a newline
        $chunks = ["{\"plan\": \"a\xc3", "\xb1adir\", ", "\"raw\": \"\x00\xff\"", ",\n\"n\": 1}"];
        $first = Buffer::pushMany(21, $gen, array_slice($chunks, 0, 3), seq: 0, scenario: 3);
        self::assertSame(['length' => 3, 'appended' => 3, 'skipped' => 0], $first);
        // a retried batch (its reply lost): the chunks already there are skipped
        $retry = Buffer::pushMany(21, $gen, $chunks, seq: 0, scenario: 3);
        self::assertSame(['length' => 4, 'appended' => 1, 'skipped' => 3], $retry);
        self::assertSame(0, Buffer::push(21, $gen, $chunks[3], seq: 3, scenario: 3)['appended']);

        $buffer = $app->make(GenerationBuffer::class);
        $key = $buffer->keys->chunks(21, $gen, 3);
        $meta = self::hash($buffer, Keys::meta($key));
        self::assertSame('4', $meta['chunk_count']);
        self::assertSame((string) strlen(implode('', $chunks)), $meta['bytes']);
        self::assertMatchesRegularExpression('/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/', $meta['last_chunk_at']);
        self::assertArrayHasKey('first_chunk_at', $meta);
        self::assertSame(['21', '3', (string) $gen], [$meta['organization_id'], $meta['scenario_id'], $meta['generation_id']]);
        $ttl = (int) $buffer->redis()->command($key, ['TTL', $key]);
        self::assertGreaterThan(86000, $ttl);

        [$code, $out, $err] = self::genbuf(['compact-generation', '21', (string) $gen,
            '--scenario-id', '3', '--delete', '--json']);
        self::assertSame(0, $code, $err);
        $result = json_decode($out, true);
        self::assertTrue($result['persisted'] && $result['deleted']);
        self::assertSame(4, $result['chunk_count']);
        $row = self::row($gen);
        self::assertSame(implode('', $chunks), base64_decode($row->compacted, true));
    }

    /** @dataProvider clients */
    public function testUnsequencedPushesAndFinishAnnounceToTheWorkerStream(string $client): void
    {
        $app = self::app($client);
        $gen = self::newGeneration(22);
        foreach (['{"a"', ': ', '1}'] as $chunk) {
            self::assertSame(1, Buffer::push(22, $gen, $chunk)['appended']);
        }
        $key = Buffer::finish(22, $gen);
        $buffer = $app->make(GenerationBuffer::class);
        self::assertArrayHasKey('finished_at', self::hash($buffer, Keys::meta($key)));
        $stream = $buffer->keys->events();
        $entries = $buffer->redis()->command($stream, ['XRANGE', $stream, '-', '+']);
        $last = end($entries)[1];
        self::assertSame(['org', '22', 'gen', (string) $gen, 'idle', '0', 'key', $key],
            array_map('strval', array_values($last)));
    }

    /** @dataProvider clients */
    public function testAFinishRetriedAfterTheBufferWasCompactedBringsBackNoMetaHash(string $client): void
    {
        $app = self::app($client);
        $gen = self::newGeneration(22);
        $buffer = $app->make(GenerationBuffer::class);
        $key = $buffer->keys->chunks(22, $gen);
        // no list and no meta hash: compacted and deleted since the first finish()
        self::assertSame($key, Buffer::finish(22, $gen));
        self::assertSame(0, (int) $buffer->redis()->command($key, ['EXISTS', $key, Keys::meta($key)]));

        Buffer::push(22, $gen, 'x');
        Buffer::finish(22, $gen);
        $meta = Keys::meta($key);
        self::assertArrayHasKey('finished_at', self::hash($buffer, $meta));
        $ttl = (int) $buffer->redis()->command($meta, ['TTL', $meta]);
        self::assertGreaterThan(86000, $ttl);
    }

    /** @return array<string, string> */
    private static function hash(GenerationBuffer $buffer, string $key): array
    {
        $flat = array_values($buffer->redis()->command($key, ['HGETALL', $key]));
        $out = [];
        for ($i = 0; $i < count($flat); $i += 2) {
            $out[(string) $flat[$i]] = (string) $flat[$i + 1];
        }

        return $out;
    }
}
