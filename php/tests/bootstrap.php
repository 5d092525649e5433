<?php

declare(strict_types=1);

/*
 * Without Composer: Debian's Laravel (php-laravel-framework, under /usr/share/php), predis
 * (php-nrk-predis) and the package's own autoloader. The servers and genbuf come from the
 * pytest test that runs phpunit (tests/test_php_package.py), through GENBUF_TEST_* variables.
 */

set_include_path('/usr/share/php' . PATH_SEPARATOR . get_include_path());
require_once 'Illuminate/autoload.php';
require_once 'Predis/autoload.php';
require_once dirname(__DIR__) . '/autoload.php';
require_once __DIR__ . '/Support.php';
