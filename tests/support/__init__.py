"""What only the test suite uses: Sentinel, TLS pairs, browsers, Docker, tokens, the
alert, session and tag oracles, the test scheduler. What the benchmarks share with it (pushsvc
processes, redis-server, SSE readers, /proc) is the repository's `harness/`."""
