"""Alerts on live statistics: `[[alert]]` rules (`rules`) and each instance's state (`states`)."""
