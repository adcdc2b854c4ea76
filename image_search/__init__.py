"""image-search: self-hosted semantic search over your own photos."""

__version__ = "0.1.0"
