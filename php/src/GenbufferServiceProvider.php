<?php

declare(strict_types=1);

namespace Genbuffer\Laravel;

use Genbuffer\Laravel\Console\ListenCommand;
use Illuminate\Contracts\Container\Container;
use Illuminate\Support\ServiceProvider;

/**
 * Registers GenerationBuffer, ArtifactReader and CompletionConsumer (singletons built
 * from config/genbuffer.php and the app's Redis connection), the genbuf:listen command,
 * and the publishable config (php artisan vendor:publish --tag=genbuffer-config).
 */
final class GenbufferServiceProvider extends ServiceProvider
{
    /** Bind the services. */
    public function register(): void
    {
        $this->mergeConfigFrom(dirname(__DIR__) . '/config/genbuffer.php', 'genbuffer');
        $this->app->singleton(RedisDriver::class, static function (Container $app): RedisDriver {
            $config = $app['config'];
            $connection = $app['redis']->connection($config->get('genbuffer.connection'));

            return new RedisDriver($connection->client(),
                (string) ($config->get('genbuffer.lua_path') ?: RedisDriver::defaultLuaPath()));
        });
        $this->app->singleton(GenerationBuffer::class, static function (Container $app): GenerationBuffer {
            $config = $app['config'];

            return new GenerationBuffer(
                $app->make(RedisDriver::class),
                self::prefix($config),
                (int) $config->get('genbuffer.ttl', 86400),
                (bool) $config->get('genbuffer.key_tags', false),
            );
        });
        $this->app->singleton(ArtifactReader::class, static fn (Container $app) => new ArtifactReader(
            $app['filesystem'], (array) $app['config']->get('genbuffer.stores', [])));
        $this->app->singleton(CompletionConsumer::class, static fn (Container $app) => new CompletionConsumer(
            $app->make(RedisDriver::class),
            $app->make(GenerationBuffer::class)->keys,
            $app['events'],
            (string) $app['config']->get('genbuffer.completions.group', 'laravel'),
            (int) $app['config']->get('genbuffer.completions.claim_idle_ms', 300000),
        ));
    }

    /** Publish the config and register the command. */
    public function boot(): void
    {
        $this->publishes([
            dirname(__DIR__) . '/config/genbuffer.php' => $this->app->configPath('genbuffer.php'),
        ], 'genbuffer-config');
        if ($this->app->runningInConsole()) {
            $this->commands([ListenCommand::class]);
        }
    }

    /**
     * The key prefix: genbuffer.prefix when set, else the connection's own Laravel prefix
     * (its options.prefix, else database.redis.options.prefix), as Laravel's client applies
     * it to every key the app writes.
     */
    public static function prefix(\Illuminate\Contracts\Config\Repository $config): string
    {
        $explicit = $config->get('genbuffer.prefix');
        if ($explicit !== null) {
            return (string) $explicit;
        }
        $name = $config->get('genbuffer.connection', 'default');

        return (string) ($config->get("database.redis.{$name}.options.prefix")
            ?? $config->get('database.redis.options.prefix', ''));
    }
}
