"""pushsvc: rolling-window statistics per topic, streamed over Server-Sent Events."""

__version__ = "0.1.0"

__all__ = ["__version__", "create_app"]


def __getattr__(name: str) -> object:
    # Lazy so that `import pushsvc` (e.g. for the version) does not import Flask.
    if name == "create_app":
        from pushsvc.app import create_app

        return create_app
    raise AttributeError(name)
