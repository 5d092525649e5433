<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Console;

use Genbuffer\Laravel\CompletionConsumer;
use Illuminate\Console\Command;

/**
 * php artisan genbuf:listen: dispatch GenerationCompacted for every entry of genbuf's
 * completion stream, under a consumer group; run it under the app's supervisor (it loops
 * until stopped) or from the scheduler with --once.
 */
final class ListenCommand extends Command
{
    /** @var string */
    protected $signature = 'genbuf:listen
        {--consumer= : this consumer\'s name in the group (default: host and pid)}
        {--count=100 : entries read at a time}
        {--block=5000 : milliseconds a read waits for new entries}
        {--once : one round, then exit}
        {--max-time=0 : exit after this many seconds (0: never)}';

    /** @var string */
    protected $description = "Dispatch GenerationCompacted for genbuf's completion events";

    private bool $stopping = false;

    /** Run the consumer until a signal, --once or --max-time. */
    public function handle(CompletionConsumer $consumer): int
    {
        $name = (string) ($this->option('consumer') ?: gethostname() . ':' . getmypid());
        $deadline = (int) $this->option('max-time') > 0 ? time() + (int) $this->option('max-time') : null;
        if (function_exists('pcntl_async_signals')) {
            pcntl_async_signals(true);
            foreach ([SIGTERM, SIGINT] as $signal) {
                pcntl_signal($signal, function () {
                    $this->stopping = true;
                });
            }
        }
        do {
            $skipped = [];
            $done = $consumer->consume($name, (int) $this->option('count'), (int) $this->option('block'), $skipped);
            foreach ($skipped as $line) {
                $this->warn("skipped a malformed completion entry {$line}");
            }
            if ($done > 0) {
                $this->line("dispatched {$done} GenerationCompacted event(s)", null, 'v');
            }
        } while (!$this->option('once') && !$this->stopping && ($deadline === null || time() < $deadline));

        return 0;
    }
}
