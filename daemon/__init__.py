"""The watcher daemon (installed as ``image_search.daemon``)."""

from .service import Daemon, DaemonStatus

__all__ = ["Daemon", "DaemonStatus"]
