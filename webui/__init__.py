"""The web server and page (installed as ``image_search.webui``)."""

from .app import create_app

__all__ = ["create_app"]
