"""``image-search serve``, ``daemon`` and ``web``: the long-running commands. The only part of the
command line that imports the daemon and the web app, and only when one of these runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from image_search.config import Config
from image_search.errors import UserError

from .options import all_roots, paths_argument

log = logging.getLogger("image_search")


def add(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "daemon", parents=[parent], help="Watch the picture folders and keep the index equal to them."
    )
    paths_argument(p, "Folders to watch, besides the configured roots.")
    p.set_defaults(run=cmd_daemon)

    p = sub.add_parser(
        "serve",
        parents=[parent],
        help="The daemon and the web UI in one process over one database (the usual way on one machine).",
    )
    paths_argument(p, "Folders to watch, besides the configured roots.")
    p.set_defaults(run=cmd_serve)

    p = sub.add_parser(
        "web", parents=[parent], help="The web UI alone, against a SurrealDB server a daemon elsewhere fills."
    )
    paths_argument(p, "Picture folders besides the configured roots (no album folder is made inside one).")
    p.set_defaults(run=cmd_web)


async def cmd_daemon(config: Config, args: argparse.Namespace) -> int:
    from image_search.daemon import Daemon

    async with Daemon(config, all_roots(config, args), handle_signals=True) as daemon:
        await daemon.run()
    log.info("stopped")
    return 130 if daemon.interrupted else 0  # Ctrl-C: as an interrupted command; SIGTERM: done


@contextlib.asynccontextmanager
async def serving(app: Any, config: Config) -> AsyncIterator[None]:
    """Serve ``app`` on the configured address until the block ends; meanwhile the library
    commands find this process through the service file (:mod:`image_search.running`)."""
    from aiohttp import web

    from image_search.running import announced, local_url
    from image_search.webui.keys import SECURITY

    # After refusing a body (413), read what the client still sends for 2 s at most, then close.
    runner = web.AppRunner(app, handle_signals=False, access_log=None, lingering_time=2.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
        except OSError as exc:
            raise UserError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}") from None
        port = runner.addresses[0][1]
        host = config.host if ":" not in config.host else f"[{config.host}]"
        log.info("web UI at http://%s:%d/", host, port)
        with announced(config, local_url(config.host, port), app[SECURITY].token):
            yield
    finally:
        await runner.cleanup()


async def cmd_serve(config: Config, args: argparse.Namespace) -> int:
    from image_search.daemon import Daemon
    from image_search.store import Store
    from image_search.systemd import Notifier
    from image_search.webui import create_app

    roots = all_roots(config, args)
    config.roots = list(dict.fromkeys([*config.roots, *(Path(r) for r in roots)]))  # the page names them
    notifier = Notifier()
    async with Store.from_config(config) as store:
        daemon = Daemon(
            config, roots, store=store, notifier=notifier, handle_signals=True, announce_ready=False
        )
        daemon.catch_signals()
        async with serving(create_app(config, store=store, indexing=daemon), config), daemon:
            notifier.ready(f"serving http://{config.host}:{config.port}/; {daemon.status.line()}")
            await daemon.run()
    log.info("stopped")
    return 130 if daemon.interrupted else 0


async def cmd_web(config: Config, args: argparse.Namespace) -> int:
    from image_search.systemd import Notifier
    from image_search.webui import create_app

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    interrupted: list[int] = []

    def interrupt() -> None:
        interrupted.append(signal.SIGINT)
        stop.set()

    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, interrupt)
    config.roots = list(dict.fromkeys([*config.roots, *(p.expanduser().absolute() for p in args.paths)]))
    notifier = Notifier()
    async with serving(create_app(config), config):
        notifier.ready(f"serving http://{config.host}:{config.port}/")
        while not stop.is_set():
            notifier.watchdog()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), notifier.watchdog_interval or 30)
        notifier.stopping()
    return 130 if interrupted else 0
