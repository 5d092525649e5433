<?php

declare(strict_types=1);

namespace Genbuffer\Laravel;

use Genbuffer\Laravel\Exceptions\GenbufferException;
use Genbuffer\Laravel\Exceptions\RedisCommandFailed;
use Throwable;

/**
 * Raw Redis commands on the client under a Laravel connection: phpredis (\Redis,
 * \RedisCluster) or predis (\Predis\ClientInterface). Raw commands get no client-side
 * prefix, serializer or compression: the package builds genbuf's exact key names itself
 * (Keys, with the connection's prefix), so both clients write the same bytes.
 */
final class RedisDriver
{
    /** @var array<string, array{0: string, 1: string}> script name => [source, sha1] */
    private array $scripts = [];

    public function __construct(
        private readonly object $client,
        private readonly string $luaPath,
    ) {
        if (!self::supported($client)) {
            throw new GenbufferException(sprintf(
                'genbuffer needs a phpredis or predis client, got %s', $client::class));
        }
        if ($client instanceof \Predis\ClientInterface && $this->cluster()) {
            throw new GenbufferException('genbuffer on a Redis Cluster needs phpredis '
                . "(the connection's client 'phpredis', REDIS_CLIENT=phpredis): predis does "
                . 'not route the stream commands the package sends (XADD, XREADGROUP, '
                . "XAUTOCLAIM; predis 1.x: \"Cannot use 'XADD' with redis-cluster\")");
        }
    }

    /** Whether the client is one the driver speaks to. */
    public static function supported(object $client): bool
    {
        return $client instanceof \Redis || $client instanceof \RedisCluster
            || $client instanceof \Predis\ClientInterface;
    }

    /** Whether the client is a Redis Cluster client. */
    public function cluster(): bool
    {
        if ($this->client instanceof \RedisCluster) {
            return true;
        }
        if ($this->client instanceof \Predis\ClientInterface) {
            return $this->client->getConnection() instanceof \Predis\Connection\Aggregate\ClusterInterface;
        }

        return false;
    }

    /** Which client library runs the commands: "phpredis" or "predis". */
    public function library(): string
    {
        return $this->client instanceof \Predis\ClientInterface ? 'predis' : 'phpredis';
    }

    /**
     * Run one command; $route is a key of the command (a Redis Cluster routes by it).
     *
     * @param list<string|int> $args the command and its arguments
     */
    public function command(string $route, array $args): mixed
    {
        $args = array_map(static fn ($a) => (string) $a, $args);
        try {
            if ($this->client instanceof \Predis\ClientInterface) {
                $error = false;
                $reply = $this->client->executeRaw($args, $error);
                if ($error) {
                    throw new RedisCommandFailed(sprintf('Redis refused %s: %s', $args[0], $reply));
                }

                return $reply;
            }
            $this->client->clearLastError();
            $reply = $this->client instanceof \RedisCluster
                ? $this->clusterCommand($this->client, $route, $args)
                : $this->client->rawCommand(...$args);
            if ($reply === false && ($said = $this->client->getLastError()) !== null) {
                throw new RedisCommandFailed(sprintf('Redis refused %s: %s', $args[0], $said));
            }

            return $reply;
        } catch (RedisCommandFailed $e) {
            throw $e;
        } catch (Throwable $e) {  // RedisException, Predis\CommunicationException, …
            throw new RedisCommandFailed(sprintf('Redis command %s failed: %s', $args[0],
                $e->getMessage()), 0, $e);
        }
    }

    /**
     * A raw command on phpredis RedisCluster, routed by the slot of $route as written.
     * RedisCluster::rawCommand hashes its routing key with the client's OPT_PREFIX (which
     * Laravel sets to the connection's prefix) although it sends the arguments unprefixed:
     * a key the package already prefixed would be routed to the slot of the prefix twice
     * (a hash-tagged key escapes that, a stream key does not). The prefix is off for the call.
     *
     * @param list<string> $args
     */
    private function clusterCommand(\RedisCluster $client, string $route, array $args): mixed
    {
        $prefix = $client->getOption(\Redis::OPT_PREFIX);
        if (!is_string($prefix) || $prefix === '') {
            return $client->rawCommand($route, ...$args);
        }
        $client->setOption(\Redis::OPT_PREFIX, '');
        try {
            return $client->rawCommand($route, ...$args);
        } finally {
            $client->setOption(\Redis::OPT_PREFIX, $prefix);
        }
    }

    /**
     * Run one of genbuf's Lua scripts (genbuffer/lua/<name>.lua) by its sha1, loading it
     * when the server does not know it yet.
     *
     * @param list<string> $keys
     * @param list<string|int> $argv
     */
    public function script(string $name, array $keys, array $argv): mixed
    {
        [$source, $sha] = $this->source($name);
        $tail = [(string) count($keys), ...$keys, ...$argv];
        try {
            return $this->command($keys[0], ['EVALSHA', $sha, ...$tail]);
        } catch (RedisCommandFailed $e) {
            if (!str_contains($e->getMessage(), 'NOSCRIPT')) {
                throw $e;
            }
        }

        return $this->command($keys[0], ['EVAL', $source, ...$tail]);
    }

    /** The path of a script genbuf ships. */
    public function scriptPath(string $name): string
    {
        return rtrim($this->luaPath, '/') . '/' . $name . '.lua';
    }

    /** @return array{0: string, 1: string} */
    private function source(string $name): array
    {
        if (!isset($this->scripts[$name])) {
            $path = $this->scriptPath($name);
            $source = is_file($path) ? file_get_contents($path) : false;
            if ($source === false) {
                throw new GenbufferException(sprintf(
                    "genbuf's Lua script %s is not readable: set GENBUF_LUA_PATH to the lua "
                    . "directory of the genbuffer installation (python -c 'import genbuffer, "
                    . "os; print(os.path.dirname(genbuffer.__file__) + \"/lua\")')", $path));
            }
            $this->scripts[$name] = [$source, sha1($source)];
        }

        return $this->scripts[$name];
    }

    /** Default location of genbuf's scripts: genbuffer/lua beside php/ in the repository. */
    public static function defaultLuaPath(): string
    {
        return dirname(__DIR__, 2) . '/genbuffer/lua';
    }
}
