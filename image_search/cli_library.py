"""``image-search duplicates``, ``albums`` and ``album``: the library views of the web UI, on the
command line (for scripts: paths one per line, or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from .config import Config
from .errors import UserError


def add_commands(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "duplicates",
        parents=[parent],
        help="Groups of near-duplicate photos (the largest copy first). Never deletes or moves a file.",
    )
    p.add_argument(
        "--smaller",
        action="store_true",
        help="Print only the smaller copies' paths, one per line (to review, move or delete yourself).",
    )
    p.add_argument("--json", action="store_true", help="Print JSON.")
    p.set_defaults(run=cmd_duplicates)

    p = sub.add_parser("albums", parents=[parent], help="Saved albums with their photo counts.")
    p.add_argument("--json", action="store_true", help="Print JSON.")
    p.set_defaults(run=cmd_albums)

    p = sub.add_parser("album", parents=[parent], help="One album's photos: paths, or a folder of links.")
    p.add_argument("name", help="The album's name (or id).")
    p.add_argument(
        "--links",
        type=Path,
        metavar="DIR",
        help="Create DIR (new or empty, outside the picture folders) with a symbolic link to each photo.",
    )
    p.add_argument("--json", action="store_true", help="Print JSON: a list of {path, score, id}.")
    p.set_defaults(run=cmd_album)


async def _library(config: Config, store: Any) -> Any:
    from webui.library import Library

    from .model import ModelSource

    model_id = ModelSource(config.model).model_id
    stored = await store.stored_model()
    if stored is not None and stored != model_id:
        raise UserError(
            f"the database was indexed with model {stored!r}, not {model_id!r}: use --model {stored!r}"
        )
    library = Library(model_id)
    await library.load(store)
    return library


async def cmd_duplicates(config: Config, args: argparse.Namespace) -> int:
    from webui.duplicates import group_library

    from .duplicates import Settings
    from .store import Store

    async with Store.from_config(config) as store:
        library = await _library(config, store)
    settings = Settings(similarity=config.duplicate_similarity, hash_bits=config.duplicate_hash_bits)
    found = await asyncio.to_thread(group_library, library, settings)
    groups = [[library.meta[k] for k in g] for g in found.groups]
    missing, images = found.without_fingerprint, len(library)
    if args.smaller:
        for members in groups:
            for meta in members[1:]:
                print(meta.path)
    elif args.json:
        described = [
            [{"path": m.path, "width": m.width, "height": m.height, "size": m.size} for m in members]
            for members in groups
        ]
        print(json.dumps({"groups": described, "images": images, "without_fingerprint": missing}, indent=2))
    else:
        for members in groups:
            for n, meta in enumerate(members):
                label = "keep " if n == 0 else "  copy"
                print(f"{label} {meta.width}x{meta.height} {meta.size or 0:>10} B  {meta.path}")
            print()
        copies = sum(len(g) - 1 for g in groups)
        print(
            f"{len(groups)} groups, {copies} smaller copies, among {images} photos "
            f"({found.grouping.seconds:.1f} s)",
            file=sys.stderr,
        )
    if missing:
        print(
            f"{missing} photos have no fingerprint yet (indexed by an older version): "
            "the daemon or `image-search index` adds it",
            file=sys.stderr,
        )
    return 0


async def _members(library: Any, album: Any) -> list[tuple[str, float]]:
    from webui.albums import members_of

    if album.vector is None or album.model != library.model_id:
        raise UserError(
            f"album {album.name!r} was saved with model {album.model!r}: open it once in the web UI "
            "to make its search again with this model"
        )

    async def search(query: Any) -> list[tuple[str, float]]:
        return library.index.search_many([query])[0]  # type: ignore[no-any-return]

    return await members_of(library, album, album.vector, search)


async def cmd_albums(config: Config, args: argparse.Namespace) -> int:
    from . import albums
    from .albums import seen_key
    from .store import Store

    async with Store.from_config(config) as store:
        library = await _library(config, store)
        saved = await albums.list_albums(store)
    rows = []
    for album in saved:
        hits = await _members(library, album)
        new = sum(seen_key(library.meta[k].hash) not in album.seen for k, _ in hits)
        rows.append({"id": album.id, "name": album.name, "count": len(hits), "new": new, "text": album.text})
    if args.json:
        print(json.dumps(rows, indent=2))
    elif not rows:
        print("no albums yet: save a search as an album in the web UI", file=sys.stderr)
    for row in rows if not args.json else []:
        print(f"{row['count']:>7} photos  {row['new']:>5} new  {row['name']}")
    return 0


async def cmd_album(config: Config, args: argparse.Namespace) -> int:
    from . import albums
    from .store import Store

    async with Store.from_config(config) as store:
        library = await _library(config, store)
        album = await albums.find_album(store, args.name)
    hits = await _members(library, album)
    paths = [library.meta[k].path for k, _ in hits]
    if args.links:
        made = albums.link_folder(args.links.expanduser().absolute(), paths, [str(r) for r in config.roots])
        print(f"{made} links in {args.links}", file=sys.stderr)
    elif args.json:
        listed = [{"path": p, "score": round(s, 4), "id": k} for p, (k, s) in zip(paths, hits, strict=True)]
        print(json.dumps(listed, indent=2))
    else:
        for path in paths:
            print(path)
    return 0
