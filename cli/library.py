"""``image-search search``, ``status``, ``duplicates``, ``albums`` and ``album``: the library on the
command line (for people and for scripts: paths one per line, or JSON), over the same core as the
web UI.

Each command asks a source (:mod:`.sources`): the database itself, or the ``serve``/``web`` process
that holds it. Both give the same rows, so the output is the same whether or not the service runs;
``status`` adds the service's live state."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from image_search.config import Config
from image_search.models import duration

from .options import json_flag
from .output import null_flag, print_paths, printable
from .sources import source


def add(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("search", parents=[parent], help="Search the index with text.")
    p.add_argument(
        "text", help="What to look for, e.g. 'a dog on a beach at sunset' or 'beach + sunset - people'."
    )
    p.add_argument("--limit", type=int, default=20, help="How many results (default 20).")
    json_flag(p, "JSON: a list of {path, score, id}.")
    null_flag(p)
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
    null_flag(p)
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
    null_flag(p)
    p.set_defaults(run=cmd_album)

    p = sub.add_parser("status", parents=[parent], help="Counts, model, database location and failed files.")
    json_flag(p)
    p.set_defaults(run=cmd_status)


# -- the commands ------------------------------------------------------------------------------


async def cmd_search(config: Config, args: argparse.Namespace) -> int:
    from image_search.config import ConfigError
    from image_search.search import parse_query

    try:
        args.text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that are not UTF-8 on the command line (a traceback before)
        raise ConfigError(f"the query is not UTF-8 text: {printable(args.text)}") from None
    limit = max(args.limit, 0)
    results = await source(config).search(args.text, limit) if parse_query(args.text) and limit else []
    if args.null:
        print_paths([r["path"] for r in results], null=True)
        return 0
    empty = "no results (is anything indexed? see `image-search status`)"
    _print_rows(results, args.json, empty, lambda r: f"{r['score']:.4f}  {printable(r['path'])}")
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
    from image_search.models import DEFAULT_MODEL, describe, switch_costs

    status = await source(config).status()
    status = {"configured_model": config.model, "database": config.database_url} | status
    model = status["model"]
    # What another model would cost: every photo embedded again, at the rate measured here.
    costs = switch_costs(config.cache_dir, str(model), int(status["indexed"])) if model else []
    status["switch"] = costs
    if args.json:
        print(json.dumps(status, indent=2, default=str))
        return 0
    print(f"database   {status['database']} (schema {status['schema_version']})")
    if model:
        print(f"model      {model} (the library's: its photos were embedded with it)")
    else:
        print(f"model      none yet: the first index run uses {config.model or DEFAULT_MODEL}")
    for n, cost in enumerate(costs[:2]):
        print(f"{'switch' if n == 0 else '':<10} {describe(cost)}")
    print(f"indexed    {status['indexed']}")
    print(f"offline    {status['offline']}")
    print(f"failed     {status['failed']}")
    print(f"albums     {status['albums']}  (photos in each: `image-search albums`)")
    for line in _service_lines(status["service"]):
        print(line)
    for f in status["failed_files"]:
        print(f"  {printable(f['path'])}: {printable(f['error'])}")
    return 0


def _service_lines(service: dict[str, Any] | None) -> list[str]:
    """The indexer's live state: what it does, its queue and rate, why it pauses, what is offline."""
    if not service:
        return ["service    not running"]
    parts = [str(service.get("state") or "unknown")]
    if service.get("queue"):
        parts.append(f"{service['queue']} queued")
    if service.get("rate"):
        parts.append(f"{service['rate']:.1f} img/s")
    if service.get("eta"):
        parts.append(f"about {duration(float(service['eta']))} left")
    where = ", ".join(f"{k} {service[k]}" for k in ("pid", "url") if service.get(k))
    lines = [f"service    {', '.join(parts)}" + (f"  ({where})" if where else "")]
    if service.get("paused"):
        lines.append(f"paused     {service['paused']}")
    for root in service.get("offline_roots") or []:
        lines.append(f"offline    {root} (missing or unreadable: its photos are kept)")
    if service.get("last_reconcile"):
        lines.append(f"reconciled {service['last_reconcile']}")
    return lines


async def cmd_duplicates(config: Config, args: argparse.Namespace) -> int:
    found = await source(config).duplicates()
    groups, missing, images = found["groups"], found["without_fingerprint"], found["images"]
    if args.smaller or args.null:
        print_paths((copy["path"] for members in groups for copy in members[1:]), args.null)
    elif args.json:
        keys = ("groups", "images", "without_fingerprint", "similarity", "similarity_from")
        print(json.dumps({key: found[key] for key in keys}, indent=2))
    else:
        for members in groups:
            for n, copy in enumerate(members):
                label = "keep " if n == 0 else "  copy"
                size = f"{copy['width']}x{copy['height']} {copy['size'] or 0:>10} B"
                print(f"{label} {size}  {printable(copy['path'])}")
            print()
        copies, seconds = sum(len(g) - 1 for g in groups), found["seconds"]
        print(
            f"{len(groups)} groups, {copies} smaller copies, among {images} photos ({seconds:.1f} s); "
            f"vectors within cosine {found['similarity']:g} ({found['similarity_from']})",
            file=sys.stderr,
        )
    if missing:
        print(
            f"{missing} photos have no fingerprint yet (indexed by an older version): "
            "the daemon or `image-search index` adds it",
            file=sys.stderr,
        )
    return 0


async def cmd_albums(config: Config, args: argparse.Namespace) -> int:
    rows = await source(config).albums()
    empty = "no albums yet: save a search as an album in the web UI"
    _print_rows(
        rows, args.json, empty, lambda r: f"{r['count']:>7} photos  {r['new']:>5} new  {printable(r['name'])}"
    )
    return 0


async def cmd_album(config: Config, args: argparse.Namespace) -> int:
    from image_search.config import ConfigError
    from image_search.search import link_folder

    try:
        args.name.encode()
    except UnicodeEncodeError:  # an album's name is text; these bytes are not (a traceback before)
        raise ConfigError(f"the album name is not UTF-8 text: {printable(args.name)}") from None
    rows, folders = await source(config).album(args.name)
    paths = [r["path"] for r in rows]
    if args.links:
        # The same rule as the web UI's: neither a configured picture folder nor one the library holds.
        roots = sorted({str(r) for r in config.roots} | set(folders))
        made = link_folder(args.links.expanduser().absolute(), paths, roots)
        print(f"{made} links in {args.links}", file=sys.stderr)
    elif args.json:
        print(json.dumps(rows, indent=2))
    else:
        print_paths(paths, args.null)
    return 0
