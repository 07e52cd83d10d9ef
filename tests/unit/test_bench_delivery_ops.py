"""bench.delivery_ops counts what it claims: every update delivered once per stream, and the
direct way cheaper per delivery than the queued way, on this tree."""

from __future__ import annotations

from bench.delivery_ops import MODES, measure


def test_every_mode_delivers_every_update_and_counts_its_work() -> None:
    rows = {mode: measure(mode, 8, 3, cpu=False, drain_at_end=False) for mode in MODES}
    assert all(row["deliveries"] == 8 * 3 for row in rows.values())
    assert all(row["attribute_ops_per_delivery"] > 0 for row in rows.values())
    # The hub writing a sleeping stream skips the wake-up, the take and the stream's loop.
    assert (
        rows["direct"]["attribute_ops_per_delivery"] < rows["queued"]["attribute_ops_per_delivery"]
    )


def test_without_tracing_it_reports_cpu_instead() -> None:
    row = measure("direct", 4, 2, cpu=True, drain_at_end=True)
    assert row["deliveries"] == 8 and row["cpu_us_per_delivery"] > 0
    assert "attribute_ops_per_delivery" not in row
