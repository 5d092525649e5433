<?php

declare(strict_types=1);

namespace Genbuffer\Laravel;

use Genbuffer\Laravel\Exceptions\ArtifactCorrupt;
use Genbuffer\Laravel\Exceptions\ArtifactUnavailable;
use Genbuffer\Laravel\Exceptions\ZstdUnavailable;
use Illuminate\Contracts\Filesystem\Factory as Filesystems;

/**
 * The bytes of a scenario_generations row's artifact, wherever genbuf stored them:
 * base64 in `compacted`, or (offloaded) an object in a store the app has as a Laravel
 * filesystem disk. Verified against the sha256 the row records; streamed in blocks.
 *
 * The row is data, not authority (as in genbuf): only the object name genbuf writes for
 * that row (<store>/org-<org>/gen-<id>/<sha256>[.zst]) under a configured store is read,
 * never a URL as it is.
 */
final class ArtifactReader
{
    private const BLOCK = 1048576;

    /** @param array<string, string> $stores store URL => filesystem disk name */
    public function __construct(
        private readonly Filesystems $filesystems,
        private readonly array $stores = [],
    ) {
    }

    /** The artifact's bytes, verified. */
    public function read(object|array $row): string
    {
        $out = fopen('php://temp', 'w+b');
        $this->stream($row, $out);
        rewind($out);
        $bytes = stream_get_contents($out);
        fclose($out);

        return $bytes;
    }

    /**
     * Write the artifact to $out in blocks; returns its length. The sha256 is checked as
     * the last block is written: on ArtifactCorrupt what $out received must be discarded.
     *
     * @param resource $out
     */
    public function stream(object|array $row, $out): int
    {
        $row = (array) $row;
        $id = Keys::id(is_int($row['id'] ?? null) ? $row['id'] : (string) ($row['id'] ?? ''), 'generation id');
        $org = Keys::id(is_int($row['organization_id'] ?? null) ? $row['organization_id']
            : (string) ($row['organization_id'] ?? ''), 'organization id');
        $metadata = $row['metadata'] ?? [];
        if (is_string($metadata)) {
            $metadata = json_decode($metadata, true) ?: [];
        }
        $compacted = $row['compacted'] ?? null;
        if (!is_string($compacted) || $compacted === '') {
            throw new ArtifactUnavailable("generation {$id} holds no compacted artifact");
        }
        $offloaded = is_array($metadata['offloaded'] ?? null) ? $metadata['offloaded'] : null;
        if ($offloaded !== null && ($offloaded['url'] ?? null) === $compacted) {
            return $this->streamObject($id, $org, $offloaded, $out);
        }
        $bytes = base64_decode($compacted, true);
        if ($bytes === false) {
            throw new ArtifactCorrupt("generation {$id}: compacted is not valid base64");
        }
        $expected = $metadata['sha256'] ?? null;
        if (is_string($expected) && hash('sha256', $bytes) !== $expected) {
            throw new ArtifactCorrupt("generation {$id}: the artifact does not match its sha256");
        }
        fwrite($out, $bytes);

        return strlen($bytes);
    }

    /** @param resource $out */
    private function streamObject(int $id, int $org, array $offloaded, $out): int
    {
        $sha = (string) ($offloaded['sha256'] ?? '');
        $compression = (string) ($offloaded['compression'] ?? 'none');
        if (preg_match('/^[0-9a-f]{64}$/', $sha) !== 1 || !in_array($compression, ['none', 'zstd'], true)) {
            throw new ArtifactUnavailable("generation {$id}: metadata.offloaded is not genbuf's");
        }
        $name = sprintf('org-%d/gen-%d/%s%s', $org, $id, $sha, $compression === 'zstd' ? '.zst' : '');
        $disk = null;
        foreach ($this->stores as $store => $diskName) {
            if (self::canonical($store) . '/' . $name === $offloaded['url']) {
                $disk = $diskName;
                break;
            }
        }
        if ($disk === null) {
            throw new ArtifactUnavailable(sprintf(
                'generation %d: %s is not the object genbuf writes for this row in a store '
                . 'configured as a disk (genbuffer.stores: GENERATION_OFFLOAD_URL => GENBUF_OFFLOAD_DISK)', $id, $offloaded['url']));
        }
        if ($compression === 'zstd' && !function_exists('zstd_uncompress')) {
            throw new ZstdUnavailable("generation {$id}: the object is zstd-compressed and PHP "
                . 'has no zstd extension (install php-zstd, or offload without compression)');
        }
        $in = $this->filesystems->disk($disk)->readStream($name);
        if (!is_resource($in)) {
            throw new ArtifactUnavailable("generation {$id}: disk {$disk} has no object {$name}");
        }
        $hash = hash_init('sha256');
        $length = 0;
        $emit = static function (string $block) use ($hash, &$length, $out): void {
            hash_update($hash, $block);
            $length += strlen($block);
            fwrite($out, $block);
        };
        try {
            if ($compression === 'zstd') {
                $emit(self::unzstd($in, $id));
            } else {
                while (!feof($in)) {
                    $block = fread($in, self::BLOCK);
                    if ($block === false) {
                        throw new ArtifactUnavailable("generation {$id}: reading {$name} failed");
                    }
                    if ($block !== '') {
                        $emit($block);
                    }
                }
            }
        } finally {
            fclose($in);
        }
        if (hash_final($hash) !== $sha || (isset($offloaded['bytes']) && (int) $offloaded['bytes'] !== $length)) {
            throw new ArtifactCorrupt("generation {$id}: the object does not match its sha256");
        }

        return $length;
    }

    /** @param resource $in */
    private static function unzstd($in, int $id): string
    {
        $data = zstd_uncompress(stream_get_contents($in));
        if ($data === false) {
            throw new ArtifactCorrupt("generation {$id}: the object is not valid zstd");
        }

        return $data;
    }

    /** A store URL as genbuf writes it in rows: no trailing slash, no empty segment. */
    public static function canonical(string $url): string
    {
        if (!preg_match('#^([a-z0-9]+)://([^/]*)(.*)$#', $url, $m)) {
            return rtrim($url, '/');
        }
        $segments = array_values(array_filter(explode('/', $m[3]), static fn ($s) => $s !== '' && $s !== '.'));
        $path = $segments === [] ? '' : '/' . implode('/', $segments);
        if ($m[1] === 'file') {
            return 'file://' . ($path === '' ? '/' : $path);
        }

        return "{$m[1]}://{$m[2]}{$path}";
    }
}
