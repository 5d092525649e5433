<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Events;

/**
 * genbuf compacted a generation (outcome "persisted": the row holds the artifact) or
 * refused it in strict mode (outcome "strict_abort": nothing persisted, $validationId names
 * the metadata_validation_issues row). Delivered at least once: a listener treats
 * (organizationId, generationId, sha256) as the identity.
 */
final class GenerationCompacted
{
    public function __construct(
        public readonly int $organizationId,
        public readonly int $generationId,
        public readonly ?int $scenarioId,
        public readonly string $outcome,
        public readonly ?int $validationId,
        public readonly int $chunkCount,
        public readonly int $bytes,
        public readonly ?string $sha256,
        public readonly string $at,
        public readonly string $entryId,
    ) {
    }

    /** Whether the row now holds the artifact. */
    public function persisted(): bool
    {
        return $this->outcome === 'persisted';
    }
}
