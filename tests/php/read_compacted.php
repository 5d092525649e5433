<?php
// Reads scenario_generations.compacted the way the Laravel app does (PDO pgsql) and
// writes the base64-decoded bytes to stdout, untouched.
// usage: php read_compacted.php HOST PORT DATABASE USER ID
[$_, $host, $port, $database, $user, $id] = $argv;
$pdo = new PDO("pgsql:host={$host};port={$port};dbname={$database}", $user, null,
    [PDO::ATTR_ERRMODE => PDO::ERRMODE_EXCEPTION]);
$statement = $pdo->prepare('SELECT compacted FROM scenario_generations WHERE id = ?');
$statement->execute([(int) $id]);
$compacted = $statement->fetchColumn();
if ($compacted === false || $compacted === null) {
    fwrite(STDERR, "no compacted artifact for generation {$id}\n");
    exit(1);
}
$bytes = base64_decode($compacted, true);
if ($bytes === false) {
    fwrite(STDERR, "compacted is not valid base64\n");
    exit(1);
}
fwrite(STDOUT, $bytes);
