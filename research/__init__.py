"""Research: the anomaly detector's tuning on the Numenta Anomaly Benchmark (NAB), offline
(`nab_offline`: the detector over NAB's files, scored by NAB's own scorer from a checkout of
numenta/NAB) and in memory (`nab_sweep`: the candidates' thresholds swept fast).

Not benchmarks of the product: they choose its defaults (docs/journal/anomaly-detector.md).
`bench.nab`, the benchmark of the detector through the HTTP API, scores with `nab_offline`'s
functions, so that both give the same figures."""
