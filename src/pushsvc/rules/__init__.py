"""What a rules file declares, checked once at start (pure): its shape, defined once as msgspec
Structs (`file_shape`, with the field types they share in `fields` and the one line a bad file
is said in, `file_errors`); each family of topics' windows, statistics, groups and series tiers
(`analytics`), its alerts (`alerts`), derived metrics (`derive`), sessions (`sessions`), the
tiers (`tiers`), the form of a series point (`point`), and the names and bounds they may use
(`names`). The statistics, series and alerts that keep them import this package, never the
other way round."""
