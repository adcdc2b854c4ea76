"""``image-search index``: index folders once, incrementally, with a progress line."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from image_search.config import Config
from image_search.errors import UsageError, UserError

from .options import json_flag, paths_argument
from .output import printable
from .progress import Bar

log = logging.getLogger("image_search")


def add(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("index", parents=[parent], help="Index picture folders once (incremental).")
    paths_argument(p, "Folders or files (default: the configured roots).")
    p.add_argument("--force", action="store_true", help="Re-read every file, even unchanged ones.")
    p.add_argument(
        "--reembed",
        action="store_true",
        help="The database holds another model's vectors: drop them and embed everything with this model.",
    )
    json_flag(p, "Print the summary as JSON.")
    p.set_defaults(run=cmd_index)


async def cmd_index(config: Config, args: argparse.Namespace) -> int:
    from image_search.duplicates import measure_library
    from image_search.indexing import Indexer, Summary
    from image_search.models import chosen_source, pick_embedders
    from image_search.pictures import Thumbnails, normalise_root
    from image_search.running import find as find_service
    from image_search.store import Store

    targets = [normalise_root(p) for p in args.paths] or [normalise_root(p) for p in config.roots]
    if not targets:
        raise UsageError("no picture folders: give PATH arguments or set roots in the configuration")
    service = find_service(config)
    if service is not None:
        raise UserError(
            f"image-search is running (pid {service.pid}, {service.url}) and holds the database: it "
            "indexes the folders it watches by itself. To index other folders, add them to its "
            "configuration (roots) and restart it, or stop it and run `index`"
        )
    total = Summary()
    async with Store.from_config(config) as store:
        source = chosen_source(config.model, await store.bound_model())
        embedders = pick_embedders(source, config.device, config.dtype, config.compile)
        source.adopt(await store.check_model(source.identity(), reembed=args.reembed))
        async with Indexer(
            store,
            embedders,
            workers=config.workers,
            batch_size=config.batch_size,
            max_megapixels=config.max_megapixels,
            gpu_decode=config.gpu_decode,
            on_progress=Bar("re-embedding" if args.reembed else "indexing", "img"),
            thumbnails=Thumbnails(config.cache_dir),
            gpus=config.gpus,
        ) as indexer:
            await indexer.warm()  # the models load while the decoding workers start
            log.info(
                "model %s on %s (%s)",
                source.model_id,
                ", ".join(str(e.device) for e in embedders),
                embedders[0].precision,
            )
            for target in targets:
                summary = await _index_target(config, store, indexer, target, force=args.force)
                total.add(summary)
                total.seconds += summary.seconds
            await measure_library(store, indexer)  # the near-duplicate threshold, once
        await store.settle()  # after a big run: the next `status` or start opens at once
    _print_summary(total, args.json)
    return 0


async def _index_target(config: Config, store: Any, indexer: Any, target: str, *, force: bool) -> Any:
    """One PATH: a folder (its files indexed, rows of files gone from it removed) or a file."""
    from image_search.indexing import FileRef, remove_missing
    from image_search.pictures import Filter, Thumbnails, normalise_root, root_of, walk

    path = Path(target)
    if not path.exists():
        raise UserError(f"{target} does not exist")
    configured = [normalise_root(p) for p in config.roots]
    root = root_of(target, configured) or (target if path.is_dir() else str(path.parent))
    flt = Filter(config.include, config.exclude, config.follow_symlinks)
    unreadable: list[str] = []
    files = list(walk(target, flt, unreadable)) if path.is_dir() else [target]
    summary = await indexer.index([FileRef(f, root) for f in files], force=force)
    if path.is_dir():
        thumbs = Thumbnails(config.cache_dir)
        missing = await remove_missing(store, thumbs, root, set(files), under=target, unreadable=unreadable)
        summary.removed, summary.offline = len(missing.removed), len(missing.offline)
    return summary


def _print_summary(total: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(total.as_dict(), indent=2))
        return
    rate = (total.indexed + total.reused) / total.seconds if total.seconds else 0.0
    print(
        f"indexed {total.indexed}, reused {total.reused} (same content elsewhere), "
        f"unchanged {total.unchanged}, removed {total.removed}, failed {len(total.failed)}, "
        f"offline {total.offline} (in folders that could not be read) "
        f"in {total.seconds:.1f} s ({rate:.1f} img/s)"
    )
    for failed_path, reason in total.failed:
        print(f"  failed: {printable(failed_path)}: {printable(reason)}")
