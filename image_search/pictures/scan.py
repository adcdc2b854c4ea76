"""Finding photos under the picture roots: extensions, hidden and partial files, globs, symlinks."""

from __future__ import annotations

import fnmatch
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .imaging import is_candidate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Filter:
    """Which files under a root are photos to index."""

    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    follow_symlinks: bool = False

    def admits(self, path: str) -> bool:
        """Not a symbolic link unless links are followed: the one rule for scans and watch events
        (a link made in a watched folder was indexed, then dropped by the next reconcile)."""
        return self.follow_symlinks or not os.path.islink(path)

    def wants_dir(self, rel: str) -> bool:
        name = rel.rsplit("/", 1)[-1]
        return not name.startswith(".") and not self._excluded(rel)

    def wants_file(self, rel: str) -> bool:
        """A file is wanted when its name is a photo's and neither it nor a folder above it is
        hidden or excluded (events arrive for single paths, not through :func:`walk`)."""
        parts = rel.split("/")
        if not is_candidate(parts[-1]) or self._excluded(rel):
            return False
        if not all(self.wants_dir("/".join(parts[: i + 1])) for i in range(len(parts) - 1)):
            return False
        return not self.include or any(_matches(rel, pat) for pat in self.include)

    def _excluded(self, rel: str) -> bool:
        return any(_matches(rel, pat) or fnmatch.fnmatch(rel.rsplit("/", 1)[-1], pat) for pat in self.exclude)


def _matches(rel: str, pattern: str) -> bool:
    """A glob against a path relative to its root, at any depth: ``*/raw/*`` also matches
    ``raw/a.jpg`` directly under the root (it did not), as if the root's own name came first."""
    return fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch("/" + rel, pattern)


def is_under(path: str, folder: str, *, real: bool = False) -> bool:
    """Whether ``path`` is ``folder`` or inside it: the one rule for "is this under that root".
    By name (both absolute and normalised), or with ``real`` after resolving symbolic links."""
    if real:
        path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def root_of(path: str, roots: Sequence[str]) -> str | None:
    """The configured root that holds ``path`` (the deepest one), or None."""
    best = None
    for root in roots:
        if is_under(path, root):
            if best is None or len(root) > len(best):
                best = root
    return best


def walk(root: str, flt: Filter, unreadable: list[str] | None = None) -> Iterator[str]:
    """Every wanted file under ``root``, as absolute paths. Folders that cannot be read are
    logged, skipped and added to ``unreadable`` (their photos are offline, not gone: see
    :func:`image_search.indexing.sync.remove_missing`); with ``follow_symlinks`` each real folder is
    visited once, so loops end."""
    seen: set[tuple[int, int]] = set()

    def onerror(exc: OSError) -> None:
        log.warning("skipping %s: %s", exc.filename, exc.strerror)
        if unreadable is not None and exc.filename:
            unreadable.append(os.fsdecode(exc.filename))

    for dirpath, dirnames, filenames in os.walk(root, onerror=onerror, followlinks=flt.follow_symlinks):
        if flt.follow_symlinks:
            try:
                st = os.stat(dirpath)
            except OSError:
                dirnames[:] = []
                continue
            if (st.st_dev, st.st_ino) in seen:
                log.warning("skipping %s: a symlink loop or a folder already visited", dirpath)
                dirnames[:] = []
                continue
            seen.add((st.st_dev, st.st_ino))
        rel_dir = os.path.relpath(dirpath, root)
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        dirnames[:] = sorted(d for d in dirnames if flt.wants_dir(rel_dir + d))
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if not flt.admits(full):
                continue
            if flt.wants_file(rel_dir + name):
                yield full


def normalise_root(path: str | os.PathLike[str]) -> str:
    return str(Path(path).expanduser().absolute())
