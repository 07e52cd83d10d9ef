"""HTTP: the gevent WSGI server, its private gevent touchpoints, TLS, and the blueprints (api/)."""
