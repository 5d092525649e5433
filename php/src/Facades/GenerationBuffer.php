<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Facades;

use Illuminate\Support\Facades\Facade;

/**
 * @method static array push(int $org, int $gen, string $chunk, ?int $seq = null, ?int $scenario = null)
 * @method static array pushMany(int $org, int $gen, iterable $chunks, ?int $seq = null, ?int $scenario = null)
 * @method static string finish(int $org, int $gen, ?int $scenario = null)
 * @method static string announce(int $org, int $gen, ?int $scenario = null, ?string $key = null)
 *
 * @see \Genbuffer\Laravel\GenerationBuffer
 */
final class GenerationBuffer extends Facade
{
    /** The container binding behind the facade. */
    protected static function getFacadeAccessor(): string
    {
        return \Genbuffer\Laravel\GenerationBuffer::class;
    }
}
