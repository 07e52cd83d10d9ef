"""What a rule adds to a topic's windows, one stage each (`step.Stage`): `sessions` (a
session topic's own statistics), `groups`, `series` (open buckets and their points),
`anomaly` (`anomaly_rate`, from the series' scores), `alerts`; in that order for every event
and every tick (`pushsvc.aggregate.topic_state`)."""
