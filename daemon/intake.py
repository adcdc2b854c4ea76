"""Events → work: the watcher's changes and the settle rule become typed work items on one queue.

A new or changed file waits in the :class:`Settler` until its size and mtime have stayed the same
for ``settle`` seconds; deletions and moves go straight to the queue, in the order they happened.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence

from image_search.indexing import FileRef
from image_search.pictures import Filter, root_of, walk

from .watch import Change, Settler
from .work import Delete, IndexFiles, Move, Reconcile, Work


class Intake:
    def __init__(self, roots: Sequence[str], flt: Filter, settle: float) -> None:
        self.roots = list(roots)
        self.filter = flt
        self.settler = Settler(settle)
        self.work: asyncio.Queue[Work] = asyncio.Queue()
        self.queued: set[str] = set()  # files in the queue or the batch being indexed

    @property
    def pending(self) -> int:
        """Files waiting: settling, queued or being indexed."""
        return len(self.settler) + len(self.queued)

    @property
    def idle(self) -> bool:
        return not self.settler.pending and self.work.empty()

    def root_for(self, path: str) -> str | None:
        return root_of(path, self.roots)

    def wanted(self, path: str) -> str | None:
        """The root of a file the filter wants (not hidden, excluded or partial, and not a link
        unless links are followed), else None."""
        root = self.root_for(path)
        if root is None:
            return None
        wanted = self.filter.wants_file(os.path.relpath(path, root)) and self.filter.admits(path)
        return root if wanted else None

    def put(self, item: Work) -> None:
        self.work.put_nowait(item)

    def reconcile(self, roots: Sequence[str] = ()) -> None:
        self.put(Reconcile(list(roots)))

    def touch(self, path: str) -> None:
        """A file to index once it has settled."""
        self.settler.touch(path)

    def on_change(self, change: Change) -> None:
        if change.kind == "changed":
            if self.wanted(change.path):
                self.settler.touch(change.path)
        elif change.kind == "created_dir":
            root = self.root_for(change.path)
            if root and self.filter.wants_dir(os.path.relpath(change.path, root)):
                for path in walk(change.path, self.filter):
                    self.settler.touch(path)
        elif change.kind == "deleted":
            self._forget(change.path, change.is_dir)
            self.put(Delete(change.path, change.is_dir))
        elif change.kind == "moved" and change.dest is not None:
            self._forget(change.path, change.is_dir)
            self.put(Move(change.path, change.dest, change.is_dir))

    def _forget(self, path: str, is_dir: bool) -> None:
        if is_dir:
            self.settler.forget_under(path + "/")
        else:
            self.settler.forget(path)

    async def settled(self) -> IndexFiles | None:
        """The files that have settled since the last call and are not queued yet (their stat()
        calls off the event loop)."""
        files = []
        for path in await asyncio.to_thread(self.settler.ready):
            root = self.wanted(path)
            if root and path not in self.queued:
                self.queued.add(path)
                files.append(FileRef(path, root))
        return IndexFiles(files) if files else None

    async def next_batch(self, limit: int, wait: float) -> Work:
        """The next item; for files, a dynamic batch of what else arrives within ``wait`` seconds
        (up to ``limit`` files). Anything else keeps its turn after the batch."""
        item = await self.work.get()
        if not isinstance(item, IndexFiles):
            return item
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait
        while len(item.files) < limit:
            try:
                more = await asyncio.wait_for(self.work.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                break
            if not isinstance(more, IndexFiles):
                self.work.put_nowait(more)
                break
            item.files.extend(more.files)
        return item

    def done(self, files: Sequence[FileRef]) -> None:
        self.queued.difference_update(ref.path for ref in files)
