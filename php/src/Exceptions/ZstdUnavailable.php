<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Exceptions;

/** The artifact was offloaded zstd-compressed and PHP lacks the zstd extension. */
class ZstdUnavailable extends ArtifactUnavailable
{
}
