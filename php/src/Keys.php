<?php

declare(strict_types=1);

namespace Genbuffer\Laravel;

use Genbuffer\Laravel\Exceptions\GenbufferException;

/**
 * genbuf's Redis key scheme (genbuffer/keys.py), prefix included.
 */
final class Keys
{
    public const ROOT = 'app:scenario_planning';
    public const META_SUFFIX = ':meta';

    public function __construct(
        public readonly string $prefix = '',
        public readonly bool $tagged = false,
    ) {
    }

    /** The chunks list of a generation (with the hash tag when the template is tagged). */
    public function chunks(int $organizationId, int $generationId, ?int $scenarioId = null): string
    {
        $org = self::id($organizationId, 'organization id');
        $gen = self::id($generationId, 'generation id');
        $name = $scenarioId === null
            ? sprintf('%s:org:%d:generation:%d:chunks', self::ROOT, $org, $gen)
            : sprintf('%s:org:%d:scenario:%d:generation:%d:chunks', self::ROOT, $org,
                self::id($scenarioId, 'scenario id'), $gen);

        return $this->tagged ? $this->prefix . '{' . $name . '}' : $this->prefix . $name;
    }

    /** The meta hash beside a chunks list. */
    public static function meta(string $chunks): string
    {
        return $chunks . self::META_SUFFIX;
    }

    /** The stream producers announce finished buffers on, for `genbuf worker`. */
    public function events(): string
    {
        return $this->prefix . self::ROOT . ':compaction-events';
    }

    /** The stream genbuf announces finished compactions on, for the app. */
    public function completions(): string
    {
        return $this->prefix . self::ROOT . ':compaction-completed';
    }

    /** A positive bigint id, or an exception naming it. */
    public static function id(mixed $value, string $name): int
    {
        if (is_int($value) && $value >= 1) {
            return $value;
        }
        if (is_string($value) && preg_match('/^[1-9][0-9]{0,18}$/', $value) === 1
            && (string) (int) $value === $value) {
            return (int) $value;
        }
        throw new GenbufferException(sprintf('%s must be a positive integer, got %s', $name,
            var_export($value, true)));
    }
}
