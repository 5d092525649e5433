<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Tests;

use Genbuffer\Laravel\GenbufferServiceProvider;
use Illuminate\Config\Repository;
use Illuminate\Database\DatabaseServiceProvider;
use Illuminate\Database\MigrationServiceProvider;
use Illuminate\Filesystem\FilesystemServiceProvider;
use Illuminate\Foundation\Application;
use Illuminate\Redis\RedisServiceProvider;
use Illuminate\Support\Facades\Facade;
use PDO;
use PHPUnit\Framework\TestCase;

/** A Laravel application and genbuf, as the tests use them. */
abstract class Support extends TestCase
{
    /** An environment variable the pytest runner sets (the test is skipped without it). */
    protected static function env(string $name): string
    {
        $value = getenv($name);
        if ($value === false || $value === '') {
            self::markTestSkipped("{$name} is not set: run through tests/test_php_package.py");
        }

        return $value;
    }

    /**
     * A booted Laravel app: Redis (the given client), PostgreSQL, a local disk on the
     * offload directory, and the package's provider.
     *
     * @param array<string, mixed> $config overrides, by dotted key
     */
    protected static function app(string $client = 'phpredis', array $config = []): Application
    {
        $base = sys_get_temp_dir() . '/genbuffer-laravel-app';
        @mkdir($base . '/config', 0777, true);
        $app = new Application($base);
        $app->instance('config', new Repository([
            'app' => ['name' => 'Laravel', 'env' => 'testing'],
            'database' => [
                'default' => 'pgsql',
                'migrations' => 'migrations',
                'connections' => ['pgsql' => [
                    'driver' => 'pgsql',
                    'host' => self::env('GENBUF_TEST_DB_HOST'),
                    'port' => self::env('GENBUF_TEST_DB_PORT'),
                    'database' => self::env('GENBUF_TEST_DB_DATABASE'),
                    'username' => self::env('GENBUF_TEST_DB_USERNAME'),
                    'password' => '',
                    'charset' => 'utf8',
                    'prefix' => '',
                    'schema' => 'public',
                ]],
                'redis' => [
                    'client' => $client,
                    'options' => ['prefix' => self::env('GENBUF_TEST_PREFIX')],
                    'default' => [
                        'host' => self::env('GENBUF_TEST_REDIS_HOST'),
                        'port' => (int) self::env('GENBUF_TEST_REDIS_PORT'),
                        'database' => 0,
                        'read_timeout' => 30,
                    ],
                ],
            ],
            'filesystems' => [
                'default' => 'local',
                'disks' => ['genbuf_objects' => ['driver' => 'local',
                    'root' => self::env('GENBUF_TEST_STORE_DIR')]],
            ],
            'genbuffer' => [
                'stores' => ['file://' . self::env('GENBUF_TEST_STORE_DIR') => 'genbuf_objects'],
            ],
        ]));
        foreach ($config as $key => $value) {
            $app['config']->set($key, $value);
        }
        foreach ([RedisServiceProvider::class, DatabaseServiceProvider::class,
            MigrationServiceProvider::class, FilesystemServiceProvider::class,
            GenbufferServiceProvider::class] as $provider) {
            $app->register($provider);
        }
        $app->boot();
        Facade::clearResolvedInstances();
        Facade::setFacadeApplication($app);

        return $app;
    }

    /**
     * Run the installed genbuf CLI with the test's env file.
     *
     * @param list<string> $args
     * @param array<string, string> $env
     * @param string|null $envFile another env file than GENBUF_ENV_FILE
     * @return array{0: int, 1: string, 2: string} exit code, stdout, stderr
     */
    protected static function genbuf(array $args, array $env = [], ?string $envFile = null): array
    {
        $command = [self::env('GENBUF_BIN'), '--env-file', $envFile ?? self::env('GENBUF_ENV_FILE'), ...$args];
        $process = proc_open($command, [1 => ['pipe', 'w'], 2 => ['pipe', 'w']], $pipes, null,
            [...getenv(), ...$env]);
        $out = stream_get_contents($pipes[1]);
        $err = stream_get_contents($pipes[2]);
        fclose($pipes[1]);
        fclose($pipes[2]);

        return [proc_close($process), $out, $err];
    }

    /** The test database, through PDO. */
    protected static function pdo(?string $database = null): PDO
    {
        return new PDO(sprintf('pgsql:host=%s;port=%s;dbname=%s', self::env('GENBUF_TEST_DB_HOST'),
            self::env('GENBUF_TEST_DB_PORT'), $database ?? self::env('GENBUF_TEST_DB_DATABASE')),
            self::env('GENBUF_TEST_DB_USERNAME'), '', [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
    }

    /** A new scenario_generations row of $org; its id. */
    protected static function newGeneration(int $org, ?int $scenario = null): int
    {
        $statement = self::pdo()->prepare('INSERT INTO scenario_generations (organization_id, '
            . "scenario_id, metadata) VALUES (?, ?, '{}') RETURNING id");
        $statement->execute([$org, $scenario]);

        return (int) $statement->fetchColumn();
    }

    /** A row as the app's query builder returns it (an object). */
    protected static function row(int $id): object
    {
        $statement = self::pdo()->prepare('SELECT * FROM scenario_generations WHERE id = ?');
        $statement->execute([$id]);

        return $statement->fetchObject();
    }
}
