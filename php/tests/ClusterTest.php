<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Tests;

use Genbuffer\Laravel\Console\ListenCommand;
use Genbuffer\Laravel\Events\GenerationCompacted;
use Genbuffer\Laravel\Exceptions\GenbufferException;
use Genbuffer\Laravel\Facades\GenerationBuffer as Buffer;
use Genbuffer\Laravel\GenerationBuffer;
use Genbuffer\Laravel\Keys;
use Illuminate\Foundation\Application;
use Illuminate\Support\Facades\Event;
use Symfony\Component\Console\Input\ArrayInput;
use Symfony\Component\Console\Output\BufferedOutput;

/**
 * The package on a real Redis Cluster (3 primaries) with the tagged key template: pushes
 * from a Laravel cluster connection, genbuf compact-pending compacts byte-exact, and
 * genbuf:listen hears it. Run by tests/test_php_package.py with GENBUF_TEST_CLUSTER_*
 * (phpunit --group cluster); the main run excludes the group.
 *
 * @group cluster
 */
final class ClusterTest extends Support
{
    public function testPushesOnAClusterCompactByteExactAndReachTheListener(): void
    {
        $client = 'phpredis';
        $app = self::clusterApp($client);
        $buffer = $app->make(GenerationBuffer::class);
        self::assertTrue($buffer->redis()->cluster());
        self::assertSame($client, $buffer->redis()->library());
        $org = 31;
        $gen = self::newGeneration($org, 5);
        $key = $buffer->keys->chunks($org, $gen, 5);
        self::assertSame(self::env('GENBUF_TEST_CLUSTER_PREFIX')
            . "{app:scenario_planning:org:{$org}:scenario:5:generation:{$gen}:chunks}", $key);
        // bytes genbuf keeps as they are: a multibyte character split, a NUL, invalid UTF-8
        $chunks = ["{\"plan\": \"cl\xc3", "\xb1uster\", ", "\"raw\": \"\x00\xff\"", ",\n\"n\": 3}"];
        $first = Buffer::pushMany($org, $gen, array_slice($chunks, 0, 3), seq: 0, scenario: 5);
        self::assertSame(['length' => 3, 'appended' => 3, 'skipped' => 0], $first);
        // a retried batch (its reply lost): the chunks already there are skipped
        $retry = Buffer::pushMany($org, $gen, $chunks, seq: 0, scenario: 5);
        self::assertSame(['length' => 4, 'appended' => 1, 'skipped' => 3], $retry);
        self::assertSame(0, Buffer::push($org, $gen, $chunks[3], seq: 3, scenario: 5)['appended']);
        self::assertSame($key, Buffer::finish($org, $gen, scenario: 5));
        $meta = array_values($buffer->redis()->command(Keys::meta($key), ['HGETALL', Keys::meta($key)]));
        self::assertContains('finished_at', $meta);

        [$code, $out, $err] = self::clusterGenbuf(['compact-pending', '--json']);
        self::assertSame(0, $code, $out . $err);
        $report = json_decode($out, true);
        self::assertContains(['organization_id' => $org, 'generation_id' => $gen],
            $report['compacted_generations'], $out);
        self::assertSame(implode('', $chunks), base64_decode(self::row($gen)->compacted, true));
        self::assertSame(0, (int) $buffer->redis()->command($key, ['EXISTS', $key]));

        $heard = [];
        Event::listen(GenerationCompacted::class, static function (GenerationCompacted $event) use (&$heard, $gen) {
            if ($event->generationId === $gen) {
                $heard[] = $event;
            }
        });
        $command = $app->make(ListenCommand::class);
        $command->setLaravel($app);
        $output = new BufferedOutput();
        self::assertSame(0, $command->run(new ArrayInput(['--once' => true, '--block' => '100',
            '--consumer' => "phpunit-{$client}"]), $output));
        self::assertCount(1, $heard, $output->fetch());
        [$event] = $heard;
        self::assertSame([$org, $gen, 5, 'persisted', 4], [$event->organizationId,
            $event->generationId, $event->scenarioId, $event->outcome, $event->chunkCount]);
        self::assertSame(hash('sha256', implode('', $chunks)), $event->sha256);
    }

    public function testPredisOnAClusterIsRefusedNamingPhpredis(): void
    {
        $app = self::clusterApp('predis');
        try {
            $app->make(GenerationBuffer::class);
            self::fail('predis on a cluster was accepted');
        } catch (GenbufferException $e) {
            self::assertStringContainsString('needs phpredis', $e->getMessage());
            self::assertStringContainsString('XADD', $e->getMessage());
        }
    }

    /** A Laravel app whose genbuffer connection is a cluster connection, tagged keys. */
    private static function clusterApp(string $client): Application
    {
        $seeds = array_map(static function (string $node): array {
            [$host, $port] = explode(':', $node);

            return ['host' => $host, 'port' => (int) $port, 'read_timeout' => 30];
        }, explode(',', self::env('GENBUF_TEST_CLUSTER_NODES')));

        return self::app($client, [
            'database.redis.options' => ['prefix' => self::env('GENBUF_TEST_CLUSTER_PREFIX'),
                'cluster' => 'redis'],
            'database.redis.clusters' => ['cluster' => $seeds],
            'genbuffer.connection' => 'cluster',
            'genbuffer.key_tags' => true,
            'genbuffer.completions.group' => 'test-' . bin2hex(random_bytes(6)),
        ]);
    }

    /**
     * genbuf with the cluster's env file (REDIS_CLUSTER_NODES, GENERATION_KEY_TAGS=true).
     *
     * @param list<string> $args
     * @return array{0: int, 1: string, 2: string}
     */
    private static function clusterGenbuf(array $args): array
    {
        return self::genbuf($args, [], self::env('GENBUF_TEST_CLUSTER_ENV_FILE'));
    }
}
