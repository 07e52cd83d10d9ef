"""Statistics made updates: the aggregator (a deterministic state machine, events in, update
drafts out) and the shard runner that drives it from a shard's Redis event log."""
