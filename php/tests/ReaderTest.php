<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Tests;

use Genbuffer\Laravel\ArtifactReader;
use Genbuffer\Laravel\Exceptions\ArtifactCorrupt;
use Genbuffer\Laravel\Exceptions\ArtifactUnavailable;
use Genbuffer\Laravel\Exceptions\ZstdUnavailable;
use Genbuffer\Laravel\Facades\GenerationBuffer as Buffer;

/** ArtifactReader on base64 rows and on objects genbuf offloaded to a local disk. */
final class ReaderTest extends Support
{
    private static function compacted(int $org, array $chunks, array $env = []): int
    {
        $gen = self::newGeneration($org);
        Buffer::pushMany($org, $gen, $chunks);
        [$code, , $err] = self::genbuf(['compact-generation', (string) $org, (string) $gen, '--delete', '--json'], $env);
        self::assertSame(0, $code, $err);

        return $gen;
    }

    public function testBase64RowsAreReadAndVerified(): void
    {
        $app = self::app();
        $chunks = ['{"x": "', str_repeat('é', 1000), '"}'];
        $gen = self::compacted(25, $chunks);
        $row = self::row($gen);
        self::assertStringStartsWith('eyJ4', $row->compacted);
        $reader = $app->make(ArtifactReader::class);
        self::assertSame(implode('', $chunks), $reader->read($row));
        $row->metadata = json_encode(['sha256' => str_repeat('0', 64)] + json_decode($row->metadata, true));
        $this->expectException(ArtifactCorrupt::class);
        $reader->read($row);
    }

    public function testOffloadedObjectsAreStreamedFromTheDiskAndVerified(): void
    {
        $app = self::app();
        $chunks = array_map(static fn ($i) => "\"{$i}\",", range(1, 2000));
        $chunks = ['[', ...$chunks, '"end"]'];
        $gen = self::compacted(26, $chunks, ['GENERATION_OFFLOAD_BYTES' => '1024']);
        $row = self::row($gen);
        $store = 'file://' . self::env('GENBUF_TEST_STORE_DIR');
        self::assertStringStartsWith($store . '/org-26/gen-' . $gen . '/', $row->compacted);
        $reader = $app->make(ArtifactReader::class);
        $out = fopen('php://temp', 'w+b');
        self::assertSame(strlen(implode('', $chunks)), $reader->stream($row, $out));
        rewind($out);
        self::assertSame(implode('', $chunks), stream_get_contents($out));

        // a store no disk is configured for: a clear exception, nothing read
        try {
            (new ArtifactReader($app['filesystem'], []))->read($row);
            self::fail('read without a disk');
        } catch (ArtifactUnavailable $e) {
            self::assertStringContainsString('in a store configured as a disk', $e->getMessage());
        }
        // a row pointing elsewhere than genbuf's name for it is refused
        $forged = clone $row;
        $meta = json_decode($row->metadata, true);
        $meta['offloaded']['url'] = $forged->compacted = $store . '/org-1/gen-1/' . $meta['offloaded']['sha256'];
        $forged->metadata = json_encode($meta);
        try {
            $reader->read($forged);
            self::fail('a forged row was read');
        } catch (ArtifactUnavailable $e) {
            self::assertStringContainsString('is not the object genbuf writes for this row', $e->getMessage());
        }
        // the object changed on disk
        $path = substr($row->compacted, strlen('file://'));
        file_put_contents($path, 'tampered');
        $this->expectException(ArtifactCorrupt::class);
        $reader->read($row);
    }

    public function testAZstdObjectWithoutTheExtensionIsAClearException(): void
    {
        if (function_exists('zstd_uncompress')) {
            self::markTestSkipped('this PHP has the zstd extension');
        }
        $app = self::app();
        $gen = self::compacted(27, ['["', str_repeat('z', 5000), '"]'],
            ['GENERATION_OFFLOAD_BYTES' => '1024', 'GENERATION_OFFLOAD_COMPRESSION' => 'zstd']);
        $row = self::row($gen);
        self::assertStringEndsWith('.zst', $row->compacted);
        $this->expectException(ZstdUnavailable::class);
        $this->expectExceptionMessage('has no zstd extension');
        $app->make(ArtifactReader::class)->read($row);
    }
}
