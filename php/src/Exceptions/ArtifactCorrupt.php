<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Exceptions;

/** The bytes read do not match the sha256 (or length) the row records. */
class ArtifactCorrupt extends GenbufferException
{
}
