"""Updates out to this process's streams: the hub, a stream primed with its replay, pacing,
projection, and the socket the hub writes."""
