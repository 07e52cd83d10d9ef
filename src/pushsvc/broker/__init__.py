"""Brokers: the contract (`base`, `shared_log`) and its two implementations, `memory` and
`redis`. `pushsvc.runtime` chooses one from the settings."""
