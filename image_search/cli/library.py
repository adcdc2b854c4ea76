"""``image-search search``, ``status``, ``duplicates``, ``albums`` and ``album``: the library on the
command line (for people and for scripts: paths one per line, or JSON), over the same core as the
web UI."""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import sys
from pathlib import Path
from typing import Any

from ..config import Config
from .options import json_flag


def add(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("search", parents=[parent], help="Search the index with text.")
    p.add_argument(
        "text", help="What to look for, e.g. 'a dog on a beach at sunset' or 'beach + sunset - people'."
    )
    p.add_argument("--limit", type=int, default=20, help="How many results (default 20).")
    json_flag(p, "JSON: a list of {path, score, id}.")
    p.set_defaults(run=cmd_search)

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
    json_flag(p)
    p.set_defaults(run=cmd_duplicates)

    p = sub.add_parser("albums", parents=[parent], help="Saved albums with their photo counts.")
    json_flag(p)
    p.set_defaults(run=cmd_albums)

    p = sub.add_parser("album", parents=[parent], help="One album's photos: paths, or a folder of links.")
    p.add_argument("name", help="The album's name (or id).")
    p.add_argument(
        "--links",
        type=Path,
        metavar="DIR",
        help="Create DIR (new or empty, outside the picture folders) with a symbolic link to each photo.",
    )
    json_flag(p, "Print JSON: a list of {path, score, id}.")
    p.set_defaults(run=cmd_album)

    p = sub.add_parser("status", parents=[parent], help="Counts, model, database location and failed files.")
    json_flag(p)
    p.set_defaults(run=cmd_status)


async def _open_library(config: Config) -> Any:
    from ..library import Library
    from ..model import ModelSource
    from ..store import Store

    async with Store.from_config(config) as store:
        return await Library.open(store, ModelSource(config.model).model_id)


async def cmd_search(config: Config, args: argparse.Namespace) -> int:
    from ..model import ModelSource, TextEmbedder
    from ..queries import Session, TextQueries, session_vector
    from ..refine import EmptyQuery
    from ..vectors import Query

    library = await _open_library(config)
    embedder = TextEmbedder(ModelSource(config.model), config.text_dtype).load()
    with concurrent.futures.ThreadPoolExecutor(1) as executor:
        texts = TextQueries(embedder, executor)
        batcher = asyncio.create_task(texts.batcher.run())
        try:
            query = await session_vector(library, texts, Session(args.text))
        except EmptyQuery:
            query = None
        finally:
            batcher.cancel()
    hits = (
        []
        if query is None or not len(library)
        else library.index.search_many([Query(query, max(args.limit, 0))])[0]
    )
    results = [{"path": library.meta[k].path, "score": round(s, 4), "id": k} for k, s in hits]
    empty = "no results (is anything indexed? see `image-search status`)"
    _print_rows(results, args.json, empty, lambda r: f"{r['score']:.4f}  {r['path']}")
    return 0


def _print_rows(rows: list[dict[str, Any]], as_json: bool, empty: str, line: Any) -> None:
    """JSON for scripts; else one line a row, or what to do when there is none (on stderr)."""
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    if not rows:
        print(empty, file=sys.stderr)
    for row in rows:
        print(line(row))


async def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from ..store import Store, real_path

    async with Store.from_config(config) as store:
        counts = await store.counts()
        model = await store.stored_model()
        failures = await store.failures()
        version = await store.schema_version()
        albums = await store.album_count()
    status: dict[str, Any] = {
        "indexed": counts.indexed,
        "failed": counts.failed,
        "offline": counts.offline,
        "total": counts.total,
        "model": model,
        "configured_model": config.model,
        "database": config.database_url,
        "schema_version": version,
        "albums": albums,
        "failed_files": [{"path": real_path(f), "error": f["error"]} for f in failures],
    }
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"database   {status['database']} (schema {version})")
    print(f"model      {model or '(none yet)'}")
    print(f"indexed    {counts.indexed}")
    print(f"offline    {counts.offline}")
    print(f"failed     {counts.failed}")
    print(f"albums     {albums}  (photos in each: `image-search albums`)")
    for f in status["failed_files"]:
        print(f"  {f['path']}: {f['error']}")
    return 0


async def cmd_duplicates(config: Config, args: argparse.Namespace) -> int:
    from ..duplicates import Settings, group_library

    library = await _open_library(config)
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
        seconds = found.grouping.seconds
        print(
            f"{len(groups)} groups, {copies} smaller copies, among {images} photos ({seconds:.1f} s)",
            file=sys.stderr,
        )
    if missing:
        print(
            f"{missing} photos have no fingerprint yet (indexed by an older version): "
            "the daemon or `image-search index` adds it",
            file=sys.stderr,
        )
    return 0


async def _album_members(config: Config, name: str | None) -> tuple[Any, list[tuple[Any, list[Any]]]]:
    """The library and, for one album (by name or id) or all of them, its members now."""
    from .. import albums
    from ..library import Library
    from ..model import ModelSource
    from ..store import Store

    async with Store.from_config(config) as store:
        library = await Library.open(store, ModelSource(config.model).model_id)
        saved = (
            [await albums.find_album(store, name)] if name is not None else await albums.list_albums(store)
        )
        out = []
        for album in saved:
            vector = await albums.album_vector(store, library, None, album)
            out.append((album, await albums.members(library, album, vector, albums.direct_search(library))))
    return library, out


async def cmd_albums(config: Config, args: argparse.Namespace) -> int:
    from ..albums import is_new

    library, found = await _album_members(config, None)
    rows = [
        {
            "id": album.id,
            "name": album.name,
            "count": len(hits),
            "new": sum(is_new(library, album, k) for k, _ in hits),
            "text": album.text,
        }
        for album, hits in found
    ]
    empty = "no albums yet: save a search as an album in the web UI"
    _print_rows(rows, args.json, empty, lambda r: f"{r['count']:>7} photos  {r['new']:>5} new  {r['name']}")
    return 0


async def cmd_album(config: Config, args: argparse.Namespace) -> int:
    from ..albums import link_folder

    library, [(_, hits)] = await _album_members(config, args.name)
    paths = [library.meta[k].path for k, _ in hits]
    if args.links:
        # The same rule as the web UI's: neither a configured picture folder nor one the library holds.
        roots = sorted({str(r) for r in config.roots} | set(library.folders()))
        made = link_folder(args.links.expanduser().absolute(), paths, roots)
        print(f"{made} links in {args.links}", file=sys.stderr)
    elif args.json:
        listed = [{"path": p, "score": round(s, 4), "id": k} for p, (k, s) in zip(paths, hits, strict=True)]
        print(json.dumps(listed, indent=2))
    else:
        for path in paths:
            print(path)
    return 0
