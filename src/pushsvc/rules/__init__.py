"""What a rules file declares, checked once at start (pure): each family of topics' windows,
statistics, groups and series tiers (`analytics`), its alerts (`alerts`), the tiers
(`tiers`), the form of a series point (`point`), and the names and bounds they may use
(`names`). The statistics, series and alerts that keep them import this package, never the
other way round."""
