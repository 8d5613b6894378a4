"""The HTTP API."""

from factq.api.app import create_app

__all__ = ["create_app"]
