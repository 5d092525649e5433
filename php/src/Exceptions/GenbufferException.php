<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Exceptions;

use RuntimeException;

/** Base of every exception the package throws on purpose. */
class GenbufferException extends RuntimeException
{
}
