"""Updates out to this process's streams: the hub, a stream primed with its replay, the one
stream loop and its write strategies, rendering (projection, pacing), and the socket the hub
writes."""
