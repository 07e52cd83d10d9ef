"""pushsvc: rolling-window statistics per topic, streamed over Server-Sent Events.

The WSGI app is `pushsvc.app:create_app()`; this module holds only the version, so that
`import pushsvc` costs nothing and no module imports back into the package root's children.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
