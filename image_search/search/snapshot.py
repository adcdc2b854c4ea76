"""A snapshot of the searchable library beside an embedded database, for a fast start.

Reading every row through the SDK costs ~14 s per 100k photos on 2 cores (the rows' facts are
decoded one by one); the snapshot is the same library as arrays: the float16 matrix
(memory-mapped) and each fact as a column. It is used only when it was written at the database's
current change counter (every write to the store bumps it, in the write's own transaction) for
the same model, and is checked for shape and length on the way in; anything
else (another counter, a file cut short, a foreign file) means a full load from the database,
after which a new snapshot is written. Nothing in it is executed: no pickles.

Layout: a folder ``DIR.library`` beside the database folder ``DIR``, replaced whole (written
aside, then renamed): ``state.json`` (counter, model, rows, dimension), ``matrix.npy``,
``columns.npz``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import beside_database

log = logging.getLogger(__name__)

FORMAT = 2  # 2: undated photos are NaN (their file time is no longer their date)
TEXT = ("key", "path", "root", "format", "hash")
FEW = ("root", "format")  # a handful of values among a million rows: each kept once, rows by number
NUMBERS = ("width", "height", "size")


def folder_for(database_url: str) -> Path | None:
    """``DIR.library`` beside an embedded database folder ``DIR``; None for mem:// and servers."""
    return beside_database(database_url, ".library")


def _pack(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The texts as one UTF-8 blob and where each ends, in characters: read back with one decode
    when every text is proper Unicode. A name that is not UTF-8 (kept with surrogate escapes)
    makes the ends count bytes instead, marked by a negative first entry."""
    joined = "".join(texts)
    try:
        blob = joined.encode("utf-8")
        ends = np.cumsum([len(t) for t in texts], dtype=np.int64)
    except UnicodeEncodeError:
        encoded = [t.encode("utf-8", "surrogateescape") for t in texts]
        blob = b"".join(encoded)
        ends = np.concatenate([[-1], np.cumsum([len(e) for e in encoded], dtype=np.int64)])
    return np.frombuffer(blob, dtype=np.uint8), ends


def _unpack(blob: np.ndarray, ends: np.ndarray) -> list[str]:
    data = blob.tobytes()
    if len(ends) and ends[0] < 0:  # byte ends: one decode per text
        bounds = ends[1:].tolist()
        return [
            data[a:b].decode("utf-8", "surrogateescape")
            for a, b in zip([0, *bounds[:-1]], bounds, strict=True)
        ]
    text = data.decode("utf-8")
    bounds = ends.tolist()
    if bounds and bounds[-1] != len(text):
        raise ValueError("a text column does not add up")
    return [text[a:b] for a, b in zip([0, *bounds[:-1]], bounds, strict=True)]


def save(folder: Path, seq: int, model_id: str, columns: dict[str, Any], matrix: np.ndarray) -> None:
    """Write a snapshot at change counter ``seq``: ``columns`` holds a list per name of TEXT
    (None for no value in format and hash), NUMBERS (None allowed), ``taken`` (float epoch, NaN)
    and ``fingerprint`` (bytes or None); ``matrix`` the float16 rows in the same order."""
    aside = folder.with_name(folder.name + ".new")
    shutil.rmtree(aside, ignore_errors=True)
    aside.mkdir(mode=0o700, parents=True)
    arrays: dict[str, np.ndarray] = {}
    for name in TEXT:
        values = columns[name]
        arrays[f"{name}_none"] = np.array([v is None for v in values], dtype=bool)
        if name in FEW:
            number: dict[str, int] = {}
            arrays[f"{name}_codes"] = np.array(
                [number.setdefault(v or "", len(number)) for v in values], np.int64
            )
            values = list(number)
        arrays[f"{name}_blob"], arrays[f"{name}_ends"] = _pack([v or "" for v in values])
    for name in NUMBERS:
        arrays[name] = np.array([-1 if v is None else v for v in columns[name]], dtype=np.int64)
    arrays["taken"] = np.asarray(columns["taken"], dtype=np.float64)
    prints = columns["fingerprint"]
    arrays["fingerprint_none"] = np.array([p is None for p in prints], dtype=bool)
    size = max((len(p) for p in prints if p is not None), default=0)
    grid = np.zeros((len(prints), size), dtype=np.uint8)
    for i, p in enumerate(prints):
        if p is not None and len(p) == size:
            grid[i] = np.frombuffer(p, dtype=np.uint8)
    arrays["fingerprint"] = grid
    np.savez(aside / "columns.npz", **arrays)  # type: ignore[arg-type]
    np.save(aside / "matrix.npy", np.ascontiguousarray(matrix, dtype=np.float16))
    state = {
        "format": FORMAT,
        "seq": seq,
        "model": model_id,
        "rows": len(matrix),
        "dim": int(matrix.shape[1]),
    }
    (aside / "state.json").write_text(json.dumps(state))
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(aside, folder)
    shutil.rmtree(old, ignore_errors=True)


def load(folder: Path, seq: int, model_id: str) -> tuple[dict[str, Any], np.ndarray] | None:
    """The snapshot's columns (as :func:`save` took them) and matrix, if it was written at ``seq``
    for ``model_id`` and is whole; else None. (Millions of strings: without the cyclic garbage
    collector, which has nothing to find in them.)"""
    was = gc.isenabled()
    gc.disable()
    try:
        return _load(folder, seq, model_id)
    finally:
        if was:
            gc.enable()


def _load(folder: Path, seq: int, model_id: str) -> tuple[dict[str, Any], np.ndarray] | None:
    try:
        state = json.loads((folder / "state.json").read_text())
        if state.get("format") != FORMAT or state.get("seq") != seq or state.get("model") != model_id:
            return None
        # Mapped copy-on-write: a big index keeps its rows in the file (VectorIndex.build), a small
        # one is made from it block by block, without a second copy. The file is never written:
        # a new snapshot is written aside and renamed over it, so the mapping stays whole.
        matrix = np.load(folder / "matrix.npy", mmap_mode="c", allow_pickle=False)
        n = int(state["rows"])
        if matrix.dtype != np.float16 or matrix.shape != (n, int(state["dim"])):
            return None
        with np.load(folder / "columns.npz", allow_pickle=False) as arrays:
            columns: dict[str, Any] = {}
            for name in TEXT:
                texts = _unpack(arrays[f"{name}_blob"], arrays[f"{name}_ends"])
                if name in FEW:
                    texts = [texts[c] for c in arrays[f"{name}_codes"].tolist()]
                none = arrays[f"{name}_none"]
                columns[name] = (
                    [None if absent else t for absent, t in zip(none.tolist(), texts, strict=True)]
                    if none.any()
                    else texts
                )
            for name in NUMBERS:
                columns[name] = [None if v < 0 else v for v in arrays[name].tolist()]
            columns["taken"] = arrays["taken"]
            grid, none = arrays["fingerprint"], arrays["fingerprint_none"].tolist()
            data, size = grid.tobytes(), grid.shape[1] if grid.ndim == 2 else 0
            columns["fingerprint"] = [
                None if absent else data[i * size : (i + 1) * size] for i, absent in enumerate(none)
            ]
        if any(len(columns[name]) != n for name in (*TEXT, *NUMBERS, "taken", "fingerprint")):
            return None
        return columns, matrix
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.info("library snapshot not used: %s", exc)
        return None
