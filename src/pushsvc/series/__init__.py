"""Long-range series: closed buckets at fixed resolutions (tiers), kept hours and days."""
