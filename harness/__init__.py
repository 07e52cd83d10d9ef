"""Real processes and sockets, for the tests and the benchmarks alike: pushsvc servers
(`live`, started from a process that imported pushsvc once: `forked_starts`), redis-server
and Redis Cluster (`redis_server`, `redis_cluster`), raw and parsed SSE streams
(`raw_streams`, `sse_parser`, `storm_clients`), /proc readings (`procfs`), free ports
(`net`), the pandas oracle of the statistics (`oracle`), and publishing updates as an
aggregator does, under its lease (`fenced_publish`).

Both tests/ and bench/ import it; it imports neither, so the benchmarks run without the
test tree and the tests without the benchmarks' (tests/ still import bench/ to test its
own code: one way)."""
