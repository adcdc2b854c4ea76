"""``image-search``: the command line, a thin shell over the core. Each command is a small async
function in the module that registers it: :mod:`.index`, :mod:`.serve` (serve, daemon, web),
:mod:`.library` (search, status, duplicates, albums, album), :mod:`.setup` (benchmark,
install-service)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence

from image_search.config import ConfigError, data_home
from image_search.errors import UsageError, UserError
from image_search.pictures import configure_pillow
from image_search.private import make_private
from image_search.store import StoreError

from . import index, library, serve, setup
from .options import config_from_args, config_parent
from .output import OneLine

log = logging.getLogger("image_search")

COMMAND_MODULES = (index, serve, library, setup)


def build_parser() -> argparse.ArgumentParser:
    parent = config_parent()
    parser = argparse.ArgumentParser(
        prog="image-search", description="Semantic search over your own photos (CLIP + SurrealDB)."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.add(sub, parent)
    return parser


def setup_logging(verbose: bool) -> None:
    """journald under systemd (with the systemd extra), else plain lines on stderr."""
    from image_search.systemd import journald_handler

    level = logging.DEBUG if verbose else logging.INFO
    handler = journald_handler()
    if handler is not None:
        logging.basicConfig(level=level, handlers=[handler])
    else:
        logging.basicConfig(
            level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )
    for installed in logging.getLogger().handlers:
        installed.addFilter(OneLine())
    for noisy in ("apscheduler", "watchdog", "PIL", "urllib3", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    configure_pillow()
    os.umask(0o077)  # the database, thumbnails and exports are this user's alone
    try:
        config = config_from_args(args)
        for tree in dict.fromkeys((data_home(), config.cache_dir, config.export_dir)):
            make_private(tree)
        return asyncio.run(args.run(config, args))
    except (UserError, ConfigError, StoreError) as exc:
        print(f"image-search: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError | UsageError) else 1
    except KeyboardInterrupt:
        print("image-search: interrupted", file=sys.stderr)
        return 130


def run() -> None:
    """Console entry point. Exits with ``os._exit`` once everything is closed: the embedded
    SurrealDB engine (surrealdb-embedded 3.0.0b10) can abort with a Rust panic when its runtime
    threads meet Python's interpreter finalisation (intermittently, exit status 134). Output piped
    into a reader that stops early (``| head``) ends quietly with 141, as tools killed by SIGPIPE
    do (it ended in a BrokenPipeError traceback)."""
    import os

    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to write
        code = 141
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


__all__ = ["build_parser", "main", "run"]
