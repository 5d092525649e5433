<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Exceptions;

/** Redis refused a command (an error reply), or the connection failed. */
class RedisCommandFailed extends GenbufferException
{
}
