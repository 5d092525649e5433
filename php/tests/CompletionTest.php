<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Tests;

use Genbuffer\Laravel\ArtifactReader;
use Genbuffer\Laravel\CompletionConsumer;
use Genbuffer\Laravel\Console\ListenCommand;
use Genbuffer\Laravel\Events\GenerationCompacted;
use Genbuffer\Laravel\Facades\GenerationBuffer as Buffer;
use Illuminate\Support\Facades\Event;
use Symfony\Component\Console\Input\ArrayInput;
use Symfony\Component\Console\Output\BufferedOutput;

/** genbuf's completion events reaching a Laravel listener. */
final class CompletionTest extends Support
{
    public function testAWorkerCompactionReachesTheListenerAndTheReaderGetsTheBytes(): void
    {
        $app = self::app('phpredis', ['genbuffer.completions.group' => 'test-' . bin2hex(random_bytes(6))]);
        $gen = self::newGeneration(23);
        $chunks = ['[0', ...array_map(static fn ($i) => ", {\"i\": {$i}}", range(1, 48)), "]\n"];
        Buffer::pushMany(23, $gen, $chunks, seq: 0);
        Buffer::finish(23, $gen);

        $heard = [];
        Event::listen(GenerationCompacted::class, static function (GenerationCompacted $event) use (&$heard, $gen) {
            if ($event->generationId === $gen) {
                $heard[] = $event;
            }
        });
        $worker = proc_open([self::env('GENBUF_BIN'), '--env-file', self::env('GENBUF_ENV_FILE'),
            'worker', '--concurrency', '1', '--json'], [1 => ['file', '/dev/null', 'w'],
            2 => ['file', '/dev/null', 'w']], $pipes);
        try {
            $consumer = $app->make(CompletionConsumer::class);
            $deadline = microtime(true) + 60;
            while ($heard === [] && microtime(true) < $deadline) {
                $consumer->consume('phpunit', 10, 1000);
            }
        } finally {
            proc_terminate($worker, SIGTERM);
            $code = proc_close($worker);
        }
        self::assertSame(0, $code, 'genbuf worker exits 0 on SIGTERM');
        self::assertCount(1, $heard);
        [$event] = $heard;
        self::assertSame([23, $gen, null, 'persisted', null, 50], [$event->organizationId,
            $event->generationId, $event->scenarioId, $event->outcome, $event->validationId, $event->chunkCount]);
        self::assertTrue($event->persisted());
        $bytes = $app->make(ArtifactReader::class)->read(self::row($gen));
        self::assertSame(implode('', $chunks), $bytes);
        self::assertSame(hash('sha256', $bytes), $event->sha256);
        self::assertSame(strlen($bytes), $event->bytes);
        // acknowledged: nothing is delivered again
        self::assertSame(0, $app->make(CompletionConsumer::class)->consume('phpunit', 10, 100));
    }

    public function testTheArtisanCommandDispatchesAStrictAbort(): void
    {
        $app = self::app('predis', ['genbuffer.completions.group' => 'test-' . bin2hex(random_bytes(6))]);
        $gen = self::newGeneration(24);
        Buffer::pushMany(24, $gen, ['{"cut', ' off']);
        [$code, $out, $err] = self::genbuf(['compact-generation', '24', (string) $gen, '--strict', '--json']);
        self::assertSame(1, $code, $err);
        $validation = json_decode($out, true)['validation_id'];
        self::assertIsInt($validation);

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
            '--consumer' => 'artisan']), $output));
        self::assertCount(1, $heard, $output->fetch());
        self::assertSame('strict_abort', $heard[0]->outcome);
        self::assertSame($validation, $heard[0]->validationId);
        self::assertFalse($heard[0]->persisted());
        self::assertNull(self::row($gen)->compacted);
    }

    public function testAMalformedEntryIsSkippedAndAcknowledged(): void
    {
        $app = self::app('phpredis', ['genbuffer.completions.group' => 'test-' . bin2hex(random_bytes(6))]);
        $buffer = $app->make(\Genbuffer\Laravel\GenerationBuffer::class);
        $stream = $buffer->keys->completions();
        $consumer = $app->make(CompletionConsumer::class);
        $consumer->ensureGroup();
        $id = $buffer->redis()->command($stream, ['XADD', $stream, '*', 'org', 'x', 'outcome', 'persisted']);
        $skipped = [];
        $consumer->consume('phpunit', 100, 100, $skipped);
        $ours = array_values(array_filter($skipped, static fn ($line) => str_starts_with($line, "{$id}: ")));
        self::assertCount(1, $ours, implode("\n", $skipped));
        self::assertStringContainsString('org must be a positive integer', $ours[0]);
        $again = [];
        self::assertSame(0, $consumer->consume('phpunit', 100, 100, $again));
        self::assertSame([], $again);
    }
}
