"""``image-search``: the command line. Each command is a small async function over the core."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

from .config import Config, ConfigError, load_config, options
from .errors import UserError
from .store import StoreError

log = logging.getLogger("image_search")

Command = Callable[[Config, argparse.Namespace], Coroutine[Any, Any, int]]


def _config_parent() -> argparse.ArgumentParser:
    parent = argparse.ArgumentParser(add_help=False)
    group = parent.add_argument_group(
        "configuration (flag > IMAGE_SEARCH_* environment > config file > default)"
    )
    group.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="TOML config file (default $XDG_CONFIG_HOME/image-search/config.toml)",
    )
    for f in options():
        if not f.metadata["cli"] or f.name == "roots":
            continue
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=f.metadata["help"],
            )
        elif f.type in ("list[str]",):
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                action="append",
                metavar=f.metadata["metavar"],
                help=f.metadata["help"] + " Repeatable.",
            )
        else:
            group.add_argument(
                flag,
                dest=f.name,
                default=None,
                metavar=f.metadata["metavar"] or f.name.upper(),
                help=f.metadata["help"],
            )
    group.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    return parent


def build_parser() -> argparse.ArgumentParser:
    parent = _config_parent()
    parser = argparse.ArgumentParser(
        prog="image-search", description="Semantic search over your own photos (CLIP + SurrealDB)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("index", parents=[parent], help="Index picture folders once (incremental).")
    p.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="Folders or files (default: the configured roots).",
    )
    p.add_argument("--force", action="store_true", help="Re-read every file, even unchanged ones.")
    p.add_argument(
        "--reembed",
        action="store_true",
        help="The database holds another model's vectors: drop them and embed everything with this model.",
    )
    p.add_argument("--json", action="store_true", help="Print the summary as JSON.")
    p.set_defaults(run=cmd_index)

    p = sub.add_parser(
        "daemon", parents=[parent], help="Watch the picture folders and keep the index equal to them."
    )
    p.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="Folders to watch, besides the configured roots."
    )
    p.set_defaults(run=cmd_daemon)

    p = sub.add_parser(
        "serve",
        parents=[parent],
        help="The daemon and the web UI in one process over one database (the usual way on one machine).",
    )
    p.add_argument(
        "paths", nargs="*", type=Path, metavar="PATH", help="Folders to watch, besides the configured roots."
    )
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser(
        "web", parents=[parent], help="The web UI alone, against a SurrealDB server a daemon elsewhere fills."
    )
    p.set_defaults(run=cmd_web)

    p = sub.add_parser("search", parents=[parent], help="Search the index with text.")
    p.add_argument("text", help="What to look for, e.g. 'a dog on a beach at sunset'.")
    p.add_argument("--limit", type=int, default=20, help="How many results (default 20).")
    p.add_argument("--json", action="store_true", help="JSON: a list of {path, score, id}.")
    p.set_defaults(run=cmd_search)

    p = sub.add_parser(
        "benchmark",
        parents=[parent],
        help="Measure text and image embedding, preprocessing and search on this machine.",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="ViT-L/14 with random weights (same shapes and FLOPs), also used when the model is not cached.",
    )
    p.add_argument("--quick", action="store_true", help="Fewer rounds, no 1M-vector search.")
    p.add_argument("--json", action="store_true", help="Print JSON.")
    p.set_defaults(run=cmd_benchmark)

    p = sub.add_parser(
        "install-service",
        parents=[parent],
        help="Write systemd user units and print the commands that start them.",
    )
    p.add_argument(
        "--split",
        action="store_true",
        help="Separate daemon and web units (for a SurrealDB server) instead of one 'serve' unit.",
    )
    p.add_argument(
        "--output", type=Path, default=None, help="Where to write the units (default ~/.config/systemd/user)."
    )
    p.set_defaults(run=cmd_install_service)

    from .cli_library import add_commands

    add_commands(sub, parent)

    p = sub.add_parser("status", parents=[parent], help="Counts, model, database location and failed files.")
    p.add_argument("--json", action="store_true", help="Print JSON.")
    p.set_defaults(run=cmd_status)
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    # PATH arguments are not the roots option: each command decides how they combine with it.
    values = {f.name: getattr(args, f.name, None) for f in options() if f.name != "roots"}
    return load_config(values, config_file=args.config)


# -- index ----------------------------------------------------------------------------------


class ProgressLine:
    """One self-rewriting progress line on a terminal; periodic log lines elsewhere."""

    def __init__(self, stream: Any = sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.last = 0.0

    def __call__(self, progress: Any) -> None:
        now = time.monotonic()
        if not self.tty and now - self.last < 10 and progress.done < progress.total:
            return
        self.last = now
        eta = progress.eta
        text = (
            f"{progress.done}/{progress.total} files  {progress.rate:.1f} img/s  "
            f"ETA {_duration(eta) if eta is not None else '?'}"
        )
        if self.tty:
            self.stream.write("\r\033[K" + text)
            if progress.done >= progress.total:
                self.stream.write("\n")
            self.stream.flush()
        else:
            log.info("%s", text)


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


async def cmd_index(config: Config, args: argparse.Namespace) -> int:
    from .indexer import FileRef, Indexer, Summary
    from .model import ModelSource, pick_embedders
    from .scan import Filter, normalise_root, root_of, walk
    from .store import Store

    targets = [normalise_root(p) for p in args.paths] or [normalise_root(p) for p in config.roots]
    if not targets:
        raise UserError("no picture folders: give PATH arguments or set roots in the configuration")
    configured = [normalise_root(p) for p in config.roots]
    flt = Filter(config.include, config.exclude, config.follow_symlinks)
    source = ModelSource(config.model)
    embedders = pick_embedders(source, config.device, config.dtype, config.compile)
    total = Summary()
    async with Store.from_config(config) as store:
        await store.check_model(source.model_id, reembed=args.reembed)
        for embedder in embedders:
            embedder.load()
        log.info(
            "model %s on %s (%s)",
            source.model_id,
            ", ".join(str(e.device) for e in embedders),
            str(embedders[0].dtype).removeprefix("torch."),
        )
        async with Indexer(
            store,
            embedders,
            workers=config.workers,
            batch_size=config.batch_size,
            max_megapixels=config.max_megapixels,
            gpu_decode=config.gpu_decode,
            on_progress=ProgressLine(),
        ) as indexer:
            for target in targets:
                path = Path(target)
                if not path.exists():
                    raise UserError(f"{target} does not exist")
                root = root_of(target, configured) or (target if path.is_dir() else str(path.parent))
                files = list(walk(target, flt)) if path.is_dir() else [target]
                summary = await indexer.index([FileRef(f, root) for f in files], force=args.force)
                if path.is_dir():
                    summary.removed = await remove_missing(store, root, target, set(files))
                total.add(summary)
                total.seconds += summary.seconds
    if args.json:
        print(json.dumps(total.as_dict(), indent=2))
    else:
        rate = (total.indexed + total.reused) / total.seconds if total.seconds else 0.0
        print(
            f"indexed {total.indexed}, reused {total.reused} (same content elsewhere), "
            f"unchanged {total.unchanged}, removed {total.removed}, failed {len(total.failed)} "
            f"in {total.seconds:.1f} s ({rate:.1f} img/s)"
        )
        for failed_path, reason in total.failed:
            print(f"  failed: {failed_path}: {reason}")
    return 0


async def remove_missing(store: Any, root: str, under: str, seen: set[str]) -> int:
    """Drop rows under ``under`` whose files are gone (the folder itself is present)."""
    import os

    from .store import real_path

    prefix = under.rstrip("/") + "/"
    gone = []
    for row in await store.rows_under(root):
        path = real_path(row)
        if path.startswith(prefix) and path not in seen and not os.path.lexists(path):
            gone.append(row["id"].id)
    await store.delete(gone)
    return len(gone)


# -- daemon ---------------------------------------------------------------------------------


def all_roots(config: Config, args: argparse.Namespace) -> list[str]:
    """The configured roots and the PATH arguments, each once."""
    from .scan import normalise_root

    roots = [normalise_root(p) for p in [*config.roots, *(getattr(args, "paths", None) or [])]]
    roots = list(dict.fromkeys(roots))
    if not roots:
        raise UserError("no picture folders: give PATH arguments or set roots in the configuration")
    return roots


async def cmd_daemon(config: Config, args: argparse.Namespace) -> int:
    from image_search.daemon import Daemon

    async with Daemon(config, all_roots(config, args), handle_signals=True) as daemon:
        await daemon.run()
    log.info("stopped")
    return 0


# -- serve and web ---------------------------------------------------------------------------


async def _listen(app: Any, config: Config) -> Any:
    from aiohttp import web

    # After refusing a body (413), read what the client still sends for 2 s at most, then close.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, lingering_time=2.0)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise UserError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
    log.info(
        "web UI at http://%s:%d/", config.host if ":" not in config.host else f"[{config.host}]", config.port
    )
    return runner


async def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from image_search.daemon import Daemon
    from image_search.daemon.notify import Notifier
    from image_search.webui import create_app

    from .store import Store

    roots = all_roots(config, args)
    notifier = Notifier()
    async with Store.from_config(config) as store:
        daemon = Daemon(
            config, roots, store=store, notifier=notifier, handle_signals=True, announce_ready=False
        )
        runner = await _listen(create_app(config, store=store, daemon=daemon), config)
        try:
            async with daemon:
                notifier.ready(f"serving http://{config.host}:{config.port}/; {daemon.status.line()}")
                await daemon.run()
        finally:
            await runner.cleanup()
    log.info("stopped")
    return 0


async def cmd_web(config: Config, args: argparse.Namespace) -> int:
    import signal

    from image_search.daemon.notify import Notifier
    from image_search.webui import create_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    notifier = Notifier()
    runner = await _listen(create_app(config), config)
    try:
        notifier.ready(f"serving http://{config.host}:{config.port}/")
        while not stop.is_set():
            notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), notifier.watchdog_interval or 30)
        notifier.stopping()
    finally:
        await runner.cleanup()
    return 0


# -- search ---------------------------------------------------------------------------------


async def cmd_search(config: Config, args: argparse.Namespace) -> int:
    from .model import ModelSource, TextEmbedder
    from .store import Store, real_path
    from .vectors import VectorIndex

    source = ModelSource(config.model)
    async with Store.from_config(config) as store:
        stored = await store.stored_model()
        if stored is not None and stored != source.model_id:
            raise UserError(
                f"the database was indexed with model {stored!r}, not {source.model_id!r}: "
                f"search with --model {stored!r}, or re-index with `image-search index --reembed`"
            )
        keys, matrix = await store.load_embeddings(source.model_id)
        index = VectorIndex.build(keys, matrix)
        query = TextEmbedder(source, config.text_dtype).load().embed_texts([args.text])[0]
        hits = index.search(query, max(args.limit, 0))
        rows = await store.get([k for k, _ in hits])
    results = [
        {"path": real_path(rows[k]), "score": round(score, 4), "id": k} for k, score in hits if k in rows
    ]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        if not results:
            print("no results (is anything indexed? see `image-search status`)", file=sys.stderr)
        for r in results:
            print(f"{r['score']:.4f}  {r['path']}")
    return 0


# -- benchmark ------------------------------------------------------------------------------


async def cmd_benchmark(config: Config, args: argparse.Namespace) -> int:
    from . import bench
    from .errors import ModelUnavailable
    from .model import ModelSource

    source = ModelSource(config.model, random_weights=args.random_weights)
    if not source.random_weights:
        try:
            source.crop_spec()
        except ModelUnavailable as exc:
            log.warning("%s\nmeasuring the ViT-L/14 architecture with random weights instead", exc)
            source = ModelSource(config.model, random_weights=True)
    report = await asyncio.to_thread(bench.run, source, config.device, config.dtype, quick=args.quick)
    print(json.dumps(report, indent=2) if args.json else bench.table(report))
    return 0


# -- install-service --------------------------------------------------------------------------


async def cmd_install_service(config: Config, args: argparse.Namespace) -> int:
    from . import units
    from .config import config_home, data_home

    script = Path(sys.executable).parent / "image-search"
    executable = str(script) if script.exists() else f"{sys.executable} -m image_search"
    directory = args.output or Path.home() / ".config" / "systemd" / "user"
    names = (
        ["image-search-daemon.service", "image-search-web.service"]
        if args.split
        else ["image-search.service"]
    )
    # The unit may write only these: they must exist before it starts.
    for folder in (data_home(), config.cache_dir, Path.home() / ".cache" / "huggingface"):
        folder.mkdir(parents=True, exist_ok=True)
    written = units.install(directory, executable, names)
    for path in written:
        print(f"wrote {path}")
    if not config.roots:
        print(
            f"\nNo picture folders are configured yet: add them to {config_home() / 'config.toml'}, e.g.\n"
            '  roots = ["/home/me/Pictures"]'
        )
    print("\nThen:")
    print("  systemctl --user daemon-reload")
    for path in written:
        print(f"  systemctl --user enable --now {path.name}")
    print("  loginctl enable-linger $USER        # keep it running when you are logged out")
    print(f"  journalctl --user -u {written[0].name} -f   # its log")
    return 0


# -- status ---------------------------------------------------------------------------------


async def cmd_status(config: Config, args: argparse.Namespace) -> int:
    from .store import Store, real_path

    async with Store.from_config(config) as store:
        counts = await store.counts()
        model = await store.stored_model()
        failures = await store.failures()
        version = await store.schema_version()
        albums = (await store.first("SELECT count() AS n FROM album GROUP ALL")) if version >= 2 else []
    status: dict[str, Any] = {
        "indexed": counts.indexed,
        "failed": counts.failed,
        "offline": counts.offline,
        "total": counts.total,
        "model": model,
        "configured_model": config.model,
        "database": config.database_url,
        "schema_version": version,
        "albums": albums[0]["n"] if albums else 0,
        "failed_files": [{"path": real_path(f), "error": f["error"]} for f in failures],
    }
    if args.json:
        print(json.dumps(status, indent=2, default=str))
    else:
        print(f"database   {status['database']} (schema {version})")
        print(f"model      {model or '(none yet)'}")
        print(f"indexed    {counts.indexed}")
        print(f"offline    {counts.offline}")
        print(f"failed     {counts.failed}")
        print(f"albums     {status['albums']}  (photos in each: `image-search albums`)")
        for f in status["failed_files"]:
            print(f"  {f['path']}: {f['error']}")
    return 0


# -- entry point ----------------------------------------------------------------------------


def setup_logging(verbose: bool) -> None:
    """journald under systemd (with the systemd extra), else plain lines on stderr."""
    level = logging.DEBUG if verbose else logging.INFO
    handler: logging.Handler | None = None
    try:
        from image_search.daemon.notify import journald_handler

        handler = journald_handler()
    except ImportError:
        handler = None
    if handler is not None:
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    for noisy in ("apscheduler", "watchdog", "PIL", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    try:
        config = config_from_args(args)
        return asyncio.run(args.run(config, args))
    except (UserError, ConfigError, StoreError) as exc:
        print(f"image-search: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except KeyboardInterrupt:
        print("image-search: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console entry point. Exits with ``os._exit`` once everything is closed: the embedded
    SurrealDB engine (surrealdb-embedded 3.0.0b10) can abort with a Rust panic when its runtime
    threads meet Python's interpreter finalisation (intermittently, exit status 134)."""
    import os

    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


if __name__ == "__main__":
    run()
