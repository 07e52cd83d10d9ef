"""Running the processes: metrics, logs, the worker supervisor, children, the private
redis-server."""
