"""The HTTP API: `create_app()` builds it."""

from strongroom.entrypoints.api.app import create_app

__all__ = ["create_app"]
