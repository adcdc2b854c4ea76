"""Imported by the forkserver alone (the indexer's preload list): it exits once its parent has
gone (:mod:`.lifeline`). Nothing else imports this module."""

from .lifeline import watch_parent

watch_parent()
