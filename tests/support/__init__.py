"""Helpers that start real parts (pushsvc processes, redis-server, SSE readers) for the
test suite and the benchmarks, so that both say it once. Not used by the server itself."""
