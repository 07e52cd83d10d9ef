"""The data both ends share, pure: topics, the event, the update format and its SSE encoding,
history rows, comma lists."""
