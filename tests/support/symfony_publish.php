<?php
// Publishes as a Symfony application does, with Symfony's Mercure component (Debian's
// php-symfony-mercure): one JSON object a line on stdin, {"topics", "data", "private", "id",
// "type"}, each published to MERCURE_URL with the token MERCURE_JWT, one after the other;
// one JSON line a publication on stdout: {"id": <the hub's answer>} or {"error": <message>}.
require_once 'Symfony/Component/Mercure/autoload.php';
require_once 'Symfony/Component/HttpClient/autoload.php';

use Symfony\Component\Mercure\Hub;
use Symfony\Component\Mercure\Jwt\StaticTokenProvider;
use Symfony\Component\Mercure\Update;

$hub = new Hub(getenv('MERCURE_URL'), new StaticTokenProvider(getenv('MERCURE_JWT')));
while (($line = fgets(STDIN)) !== false) {
    $u = json_decode($line, true);
    try {
        $id = $hub->publish(new Update(
            $u['topics'], $u['data'] ?? '', $u['private'] ?? false, $u['id'] ?? null, $u['type'] ?? null
        ));
        echo json_encode(['id' => $id]), "\n";
    } catch (\Throwable $e) {
        echo json_encode(['error' => get_class($e) . ': ' . $e->getMessage()]), "\n";
    }
    flush();
}
