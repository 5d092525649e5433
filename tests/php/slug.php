<?php
// Laravel's Str::slug of each name read as a JSON list on stdin, with '_' and '-':
// what an app's default Redis prefix is made of (config/database.php). Needs Debian's
// php-laravel-framework (Laravel 8.83 under /usr/share/php).
set_include_path('/usr/share/php' . PATH_SEPARATOR . get_include_path());
require 'Illuminate/Support/autoload.php';

use Illuminate\Support\Str;

$names = json_decode(stream_get_contents(STDIN), true);
$slugs = [];
foreach ($names as $name) {
    $slugs[] = ['underscore' => Str::slug($name, '_'), 'hyphen' => Str::slug($name, '-')];
}
echo json_encode($slugs), "\n";
