"""The watcher daemon (installed as ``image_search.daemon``)."""

from .progress import DaemonStatus
from .service import Daemon

__all__ = ["Daemon", "DaemonStatus"]
