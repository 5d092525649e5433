<?php

declare(strict_types=1);

namespace Genbuffer\Laravel\Tests;

/** `genbuf db laravel-migration` run by Laravel's migrator, then `genbuf db check`. */
final class MigrationTest extends Support
{
    public function testTheGeneratedMigrationGivesTheTablesDbCheckExpects(): void
    {
        $database = self::env('GENBUF_TEST_FRESH_DB');  // an empty database
        $dir = sys_get_temp_dir() . '/genbuf-migrations-' . bin2hex(random_bytes(4));
        mkdir($dir);
        [$code, $out, $err] = self::genbuf(['db', 'laravel-migration', '--output', $dir, '--json']);
        self::assertSame(0, $code, $err);
        $written = json_decode($out, true);
        self::assertFileExists($written['path']);

        $app = self::app('phpredis', ['database.connections.pgsql.database' => $database]);
        $migrator = $app['migrator'];
        $migrator->getRepository()->createRepository();
        $ran = $migrator->run([$dir]);
        self::assertCount(1, $ran);
        $fresh = ['DATABASE_URL' => sprintf('postgresql+psycopg://%s@%s:%s/%s',
            self::env('GENBUF_TEST_DB_USERNAME'), self::env('GENBUF_TEST_DB_HOST'),
            self::env('GENBUF_TEST_DB_PORT'), $database)];
        [$code, $out, $err] = self::genbuf(['db', 'check', '--json'], $fresh);
        self::assertSame(0, $code, $out . $err);
        $check = json_decode($out, true);
        self::assertTrue($check['ok']);
        self::assertSame([], array_values(array_filter($check['problems'],
            static fn ($p) => $p['severity'] !== 'note')), $out);
        // genbuf's migrations see the head revision: upgrade has nothing to do
        [$code, $out] = self::genbuf(['db', 'upgrade', '--json'], $fresh);
        self::assertSame(0, $code);
        self::assertSame($written['revision'], json_decode($out, true)['revision']);

        // migrate:fresh's way down and up again: the tables go and come back
        $migrator->rollback([$dir]);
        $tables = self::pdo($database)->query("SELECT count(*) FROM information_schema.tables "
            . "WHERE table_schema = 'public' AND table_name <> 'migrations'")->fetchColumn();
        self::assertSame(0, (int) $tables);
        $migrator->run([$dir]);
        [$code, $out] = self::genbuf(['db', 'check', '--json'], $fresh);
        self::assertSame(0, $code, $out);
    }
}
