"""This user's files stay this user's: the data, cache and export trees made private at start,
whatever their age. Everything is now created private (``umask 077``, folders 0700,
thumbnails 0600); trees made before that kept 0755/0644 after an upgrade, and another account read a
thumbnail. Group and other bits are taken away (the owner's keep theirs, so an executable stays
one); symbolic links and what other accounts own are left alone. A tree walked once whole gets a
marker, so later starts cost one ``stat``."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger(__name__)

MARKER = ".private-v1"


def make_private(tree: Path) -> int:
    """Take group and other permissions from everything under ``tree`` this user owns; the number
    of files and folders changed. Nothing happens where the tree does not exist."""
    if not tree.is_dir() or tree.is_symlink():
        return 0
    uid = os.getuid()
    changed = _private(tree, uid)
    if (tree / MARKER).exists():
        return changed
    for folder, dirs, files in os.walk(tree, followlinks=False):
        for name in (*dirs, *files):
            changed += _private(Path(folder, name), uid)
    try:
        (tree / MARKER).touch(mode=0o600)
    except OSError as exc:
        log.warning("cannot mark %s as private: %s", tree, exc.strerror)
    if changed:
        log.info("made %d files and folders under %s private to this user", changed, tree)
    return changed


def _private(path: Path, uid: int) -> int:
    try:
        st = os.lstat(path)
        if stat.S_ISLNK(st.st_mode) or st.st_uid != uid or not st.st_mode & 0o077:
            return 0
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:
        return 0
    return 1
