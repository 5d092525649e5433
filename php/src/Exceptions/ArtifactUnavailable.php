<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Exceptions;

/** The row holds no artifact the reader can read (none yet, a store no disk serves, a
 * name genbuf would not have written for that row, a missing object). */
class ArtifactUnavailable extends GenbufferException
{
}
