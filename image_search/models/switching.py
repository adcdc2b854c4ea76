"""What changing a library's model costs: every photo embedded again, at the rate this machine
measured for the other model (``image-search benchmark --model ID`` keeps its report under the
cache folder; ``image-search models`` shows the same rates). Nothing here guesses a rate: a model
not measured here says how to measure it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .families import KNOWN


def reports(cache_dir: Path) -> Path:
    """The folder `image-search benchmark` keeps one report per model in."""
    return cache_dir / "benchmarks"


def report_path(cache_dir: Path, model: str) -> Path:
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in model)
    return reports(cache_dir) / f"{slug}.json"


def measured_rate(cache_dir: Path, model: str) -> tuple[float, str] | None:
    """This machine's best image rate for ``model`` and where it ran, from the kept report."""
    try:
        data = json.loads(report_path(cache_dir, model).read_text())
        best = [r for r in data["results"] if r["name"].startswith("image embedding, best batch")]
        where = data["environment"].get("gpu") or f"{data['environment'].get('cores')} CPU cores"
        rate = float(best[0]["rate"])
    except (OSError, ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None
    return (rate, str(where)) if rate > 0 else None


def switch_costs(cache_dir: Path, current: str, photos: int) -> list[dict[str, Any]]:
    """For each supported model but ``current``: the photos to embed again and, where this
    machine measured that model, the image rate and the time it takes (the model alone:
    decoding runs beside it on other cores, and a run bound by decoding takes longer). Those
    measured here come first."""
    rows: list[dict[str, Any]] = []
    for known in KNOWN:
        if known.id == current:
            continue
        row: dict[str, Any] = {"model": known.id, "family": known.family, "photos": photos}
        found = measured_rate(cache_dir, known.id)
        if found is None:
            row.update(rate=None, seconds=None, measure=f"image-search benchmark --model {known.id}")
        else:
            rate, where = found
            row.update(rate=round(rate, 1), where=where, seconds=round(photos / rate))
        rows.append(row)
    return sorted(rows, key=lambda row: row["seconds"] is None)


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``: a time as a person reads it."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def describe(cost: dict[str, Any]) -> str:
    """One line for a terminal: ``CLIP ViT-L/14: 1,204 photos, about 3 min at 6.6 img/s here``."""
    head = f"{cost['model']}: {cost['photos']:,} photos to embed again"
    if cost.get("seconds") is None:
        return f"{head}, time not measured here ({cost['measure']})"
    return f"{head}: about {duration(cost['seconds'])} at {cost['rate']} img/s on {cost['where']}"
