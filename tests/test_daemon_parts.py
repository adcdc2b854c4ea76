"""The daemon's parts, each alone: the intake (events -> typed work), the rate meter and the status
snapshot. The daemon as a whole is tested in test_daemon.py and test_daemon_process.py."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from image_search.daemon.intake import Intake
from image_search.daemon.progress import DaemonStatus, RateMeter
from image_search.daemon.watch import Change
from image_search.daemon.work import Delete, IndexFiles, Move, Reconcile
from image_search.indexing.plan import FileRef, Progress, Summary
from image_search.pictures.scan import Filter, walk

from .conftest import make_photo


def intake_for(root: Path, settle: float = 0.0) -> Intake:
    return Intake([str(root)], Filter(exclude=["*.tmp"]), settle)


async def test_events_become_typed_work(tmp_path: Path) -> None:
    root = tmp_path / "Pictures"
    photo = make_photo(root / "a.jpg")
    intake = intake_for(root)
    intake.on_change(Change("changed", str(photo)))
    intake.on_change(Change("changed", str(root / "partial.tmp")))  # excluded: never settles
    intake.on_change(Change("changed", str(tmp_path / "elsewhere.jpg")))  # outside the roots
    intake.on_change(Change("deleted", str(root / "old"), is_dir=True))
    intake.on_change(Change("moved", str(root / "b.jpg"), str(root / "c.jpg")))
    intake.reconcile([str(root)])
    assert intake.pending == 1  # a.jpg settling
    assert await intake.settled() is None  # the first look notes its size and mtime
    settled = await intake.settled()
    assert settled == IndexFiles([FileRef(str(photo), str(root))])
    assert intake.pending == 1 and intake.queued == {str(photo)}  # queued now, until done()
    items = [intake.work.get_nowait() for _ in range(intake.work.qsize())]
    assert items == [
        Delete(str(root / "old"), True),
        Move(str(root / "b.jpg"), str(root / "c.jpg")),
        Reconcile([str(root)]),
    ]
    intake.done(settled.files)
    assert intake.pending == 0 and intake.idle


async def test_a_deletion_forgets_what_was_settling_below_it(tmp_path: Path) -> None:
    root = tmp_path / "Pictures"
    photo = make_photo(root / "trip" / "a.jpg")
    intake = intake_for(root)
    intake.on_change(Change("changed", str(photo)))
    intake.on_change(Change("deleted", str(root / "trip"), is_dir=True))
    assert intake.pending == 0 and await intake.settled() is None


async def test_files_arriving_together_make_one_batch(tmp_path: Path) -> None:
    root = tmp_path / "Pictures"
    intake = intake_for(root)
    for i in range(3):
        intake.put(IndexFiles([FileRef(str(root / f"{i}.jpg"), str(root))]))
    intake.put(Reconcile())
    intake.put(IndexFiles([FileRef(str(root / "late.jpg"), str(root))]))
    batch = await intake.next_batch(limit=100, wait=0.05)
    assert isinstance(batch, IndexFiles) and [os.path.basename(f.path) for f in batch.files] == [
        "0.jpg",
        "1.jpg",
        "2.jpg",
    ]
    assert await intake.next_batch(100, 0.05) == IndexFiles([FileRef(str(root / "late.jpg"), str(root))])
    assert await intake.next_batch(100, 0.05) == Reconcile()  # kept its turn after the batch it met


def test_the_rate_is_what_was_done_in_the_last_30_seconds() -> None:
    meter = RateMeter()
    assert meter.rate(0.0, busy=False) == 0.0 and meter.rate(0.0, busy=True) is None
    progress = Progress(total=100)
    for moment, done in ((100.0, 10), (102.0, 30), (104.0, 50)):
        meter.last_progress = moment
        meter._window.append((moment, done))
    assert meter.rate(104.0, busy=True) == 10.0
    assert meter.rate(200.0, busy=False) == 0.0  # nothing recent and idle
    meter(progress)  # the indexer's callback
    assert meter._window[-1][1] == 0


def test_the_rate_adds_up_index_runs_that_each_count_from_zero() -> None:
    """Every batch of watched events is an index run of its own, its ``done`` from zero: the rate
    read 0.0 img/s in 4 of 5 readings while photos were being indexed."""
    meter = RateMeter()
    for run in range(3):
        progress = Progress(total=20, started=float(run))
        for done in (5, 10, 20):
            progress.done = done
            meter(progress)
            meter._window[-1] = (run * 2 + done / 10, meter._window[-1][1])
    totals = [total for _, total in meter._window]
    assert totals == sorted(totals) and totals[-1] == 60
    assert meter.rate(meter._window[-1][0], busy=True) > 0


def test_the_status_snapshot_counts_and_lists_failures() -> None:
    status = DaemonStatus(state="indexing", queue=10, rate=5.0)
    status.count(Summary(indexed=3, reused=2, failed=[("/p/bad.jpg", "not an image")]))
    snap = status.snapshot()
    assert snap["indexed_total"] == 5 and snap["failed_total"] == 1 and snap["eta"] == 2.0
    assert snap["errors"] == [{"path": "/p/bad.jpg", "error": "not an image"}] and snap["pid"] == os.getpid()
    assert "indexing: queue 10, 5.0 img/s, ETA 2 s, 1 failed" == status.line()


def test_settle_waits_for_a_file_to_stop_changing(tmp_path: Path) -> None:
    root = tmp_path / "Pictures"
    photo = make_photo(root / "a.jpg")
    intake = intake_for(root, settle=60.0)
    intake.on_change(Change("changed", str(photo)))
    assert asyncio.run(intake.settled()) is None and intake.pending == 1


async def test_a_link_made_in_a_watched_folder_follows_the_scans_rule(tmp_path: Path) -> None:
    root = tmp_path / "Pictures"
    outside = make_photo(tmp_path / "outside.jpg")
    link = root / "link.jpg"
    root.mkdir()
    link.symlink_to(outside)
    for follow, expected in ((False, 0), (True, 1)):
        intake = Intake([str(root)], Filter(follow_symlinks=follow), 0.0)
        intake.on_change(Change("changed", str(link)))
        assert intake.pending == expected
        assert [f for f in walk(str(root), intake.filter)] == ([str(link)] if follow else [])


def test_patterns_match_at_any_depth() -> None:
    """The README's `exclude = ["*/raw/*", ...]` left raw/a.jpg directly under a root indexed."""
    from image_search.pictures.scan import Filter

    raw = Filter(exclude=["*/raw/*"])
    assert not raw.wants_file("raw/a.jpg") and not raw.wants_file("2024/raw/a.jpg")
    assert raw.wants_file("rawhide/a.jpg") and raw.wants_file("a.jpg")
    jpegs = Filter(include=["*.jpg"])
    assert jpegs.wants_file("a.jpg") and jpegs.wants_file("x/y/a.jpg") and not jpegs.wants_file("a.png")
    named = Filter(exclude=["Screenshots"])
    assert not named.wants_dir("Screenshots") and not named.wants_dir("2024/Screenshots")
