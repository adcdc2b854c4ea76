"""One photo's facts as the library keeps them (:class:`Meta`), when it was taken, and the
filters a search or an album applies to them (:class:`Filters`)."""

from __future__ import annotations

import datetime as dt
import math
import os
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..errors import BadValue
from ..store import ImageRow, real_path


class Meta(NamedTuple):
    """One photo's facts (a tuple: a million of them are made at start, 5x faster than a frozen
    dataclass)."""

    path: str
    root: str
    taken_at: float  # epoch seconds, NaN when unknown
    width: int | None
    height: int | None
    format: str | None
    hash: str | None
    size: int | None = None
    fingerprint: bytes | None = None

    @property
    def rel(self) -> str:
        return os.path.relpath(self.path, self.root)

    @property
    def folder(self) -> str:
        return os.path.dirname(self.rel)

    @property
    def taken_or_oldest(self) -> float:
        """For sorting newest first: undated photos last."""
        return -math.inf if math.isnan(self.taken_at) else self.taken_at

    @classmethod
    def from_row(cls, row: ImageRow | dict[str, Any], file_times: bool = False) -> Meta:
        return cls(
            path=real_path(row),
            root=row["root"],
            taken_at=taken_at(row, file_times),
            width=row.get("width"),
            height=row.get("height"),
            format=row.get("format"),
            hash=row.get("hash"),
            size=row.get("size"),
            fingerprint=row.get("fingerprint"),
        )


def taken_at(row: ImageRow | dict[str, Any], file_times: bool = False) -> float:
    """When the photo was taken (epoch seconds), NaN when it does not say: undated. With
    ``file_times``, an undated photo is dated by its file's modification time. Rows indexed before
    schema 6 hold that time as their date when the photo had none (to the microsecond): undated too."""
    taken, mtime_ns = row.get("taken_at"), row.get("mtime_ns")
    file_time = mtime_ns / 1e9 if isinstance(mtime_ns, int) and mtime_ns > 0 else float("nan")
    if isinstance(taken, dt.datetime):
        stamp = taken.timestamp()
        if not (isinstance(mtime_ns, int) and taken == EPOCH + dt.timedelta(microseconds=mtime_ns // 1000)):
            return stamp
    return file_time if file_times else float("nan")


EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _date(value: Any, name: str) -> float | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise BadValue(f"{name} must be a date like 2024-07-31")
    try:
        stamp = dt.datetime.fromisoformat(value)
    except ValueError:
        raise BadValue(f"{name} must be a date like 2024-07-31") from None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=dt.UTC)
    return stamp.timestamp()


MAX_FILTER_TEXT = 4096
MAX_FORMATS = 16
FILTER_KEYS = ("root", "folder", "taken_from", "taken_to", "formats")


@dataclass(frozen=True)
class Filters:
    root: str | None = None
    folder: str | None = None  # relative to its root; matches the folder and everything below
    taken_from: float | None = None
    taken_to: float | None = None
    formats: tuple[str, ...] = ()

    @property
    def empty(self) -> bool:
        return not (
            self.root
            or self.folder
            or self.taken_from is not None
            or self.taken_to is not None
            or self.formats
        )

    @classmethod
    def parse(cls, raw: Any) -> Filters:
        """From a search body's or a saved album's ``filters`` object; :class:`BadValue` if wrong."""
        raw = raw or {}
        if not isinstance(raw, dict):
            raise BadValue("filters must be an object")
        for name in ("root", "folder"):
            value = raw.get(name)
            if value is not None and (not isinstance(value, str) or len(value) > MAX_FILTER_TEXT):
                raise BadValue(f"filters.{name} must be text of at most {MAX_FILTER_TEXT} characters")
        formats = raw.get("formats") or []
        if (
            not isinstance(formats, list)
            or len(formats) > MAX_FORMATS
            or not all(isinstance(f, str) and len(f) <= 16 for f in formats)
        ):
            raise BadValue('filters.formats must be a list like ["JPEG", "PNG"]')
        taken_to = _date(raw.get("taken_to"), "filters.taken_to")
        if taken_to is not None and len(raw["taken_to"]) == 10:  # a date: through the end of that day
            taken_to += 86399.999
        return cls(
            root=raw.get("root") or None,
            folder=raw.get("folder") or None,
            taken_from=_date(raw.get("taken_from"), "filters.taken_from"),
            taken_to=taken_to,
            formats=tuple(formats),
        ).checked()

    def checked(self) -> Filters:
        if self.taken_from is not None and self.taken_to is not None and self.taken_from > self.taken_to:
            raise BadValue("filters.taken_from is after filters.taken_to: no photo can be in between")
        return self

    @staticmethod
    def clean(raw: Any) -> dict[str, Any]:
        """A ``filters`` object checked and cut to the keys that mean something, as saved with an
        album (a 15 MB object of anything was saved and echoed before)."""
        Filters.parse(raw)
        return {k: v for k, v in (raw or {}).items() if k in FILTER_KEYS and v not in (None, "", [])}
