<?php

/*
 * The package's own PSR-4 autoloader, for use without Composer (Debian's php-* packages,
 * the tests): require this file after Laravel's components are loadable.
 * With Composer, composer.json's "autoload" does the same and this file is not needed.
 */

spl_autoload_register(static function (string $class): void {
    $prefix = 'Genbuffer\\Laravel\\';
    if (strncmp($class, $prefix, strlen($prefix)) !== 0) {
        return;
    }
    $relative = substr($class, strlen($prefix));
    $path = __DIR__ . '/src/' . str_replace('\\', '/', $relative) . '.php';
    if (is_file($path)) {
        require $path;
    }
});
