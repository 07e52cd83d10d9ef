"""A fan-out load generator: N SSE subscribers on one topic, M events published at a rate.

It runs in its own process on asyncio (uvloop when installed) with raw sockets and
strict parsers for HTTP/1.x responses and the event stream, so that the server,
not the generator, is what a run measures. `python -m bench.loadgen --help` (with
`bench/` on PYTHONPATH) for the command line; `bench/fanout.py` drives it.
"""
