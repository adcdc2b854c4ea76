"""``image-search benchmark`` and ``install-service``: measuring this machine, and the systemd units."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from image_search.config import Config
from image_search.errors import UserError

from .options import json_flag, paths_argument
from .output import printable

log = logging.getLogger("image_search")


def add(sub: Any, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "benchmark",
        parents=[parent],
        help="Measure text and image embedding, preprocessing and search on this machine.",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="The model's published shapes with random weights (ViT-L/14's for a model without a shipped "
        "config), also used when the model is not cached.",
    )
    p.add_argument("--quick", action="store_true", help="Fewer rounds, no 1M-vector search.")
    json_flag(p)
    p.set_defaults(run=cmd_benchmark)

    p = sub.add_parser(
        "models",
        parents=[parent],
        help="The supported models: published retrieval figures, measured speed, which needs a GPU.",
    )
    json_flag(p)
    p.set_defaults(run=cmd_models)

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

    p = sub.add_parser(
        "doctor",
        parents=[parent],
        help="Check the device, model, database, folders, port, token and service; say what to fix.",
    )
    paths_argument(p, "Folders to watch, besides the configured roots (for the inotify check).")
    json_flag(p, "JSON: a list of {name, level, what, fix}.")
    p.set_defaults(run=cmd_doctor)


async def cmd_doctor(config: Config, args: argparse.Namespace) -> int:
    """Exit status 1 where a check failed."""
    from image_search import doctor
    from image_search.running import find

    config.roots = list(dict.fromkeys([*config.roots, *(p.expanduser().absolute() for p in args.paths)]))
    service = find(config)
    holder = f"image-search (pid {service.pid}, {service.url})" if service else None
    found, bound = await _database_check(config, holder)
    checks = list(doctor.static_checks(config, holder, bound))
    checks.insert(2, found)
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        for check in checks:
            print(check.line())
    return 1 if any(c.level == "FAIL" for c in checks) else 0


async def _database_check(config: Config, holder: str | None) -> tuple[Any, Any]:
    """The database's check, and its model with the photos it holds where it could be read."""
    from image_search import doctor
    from image_search.store import SCHEMA_VERSION, Store, StoreError, StoreLocked

    store = Store.from_config(config)
    schema = None
    bound = None
    if holder is None and (store.directory is None or store.directory.exists()):
        try:
            await store.open(migrate=False)
            schema = await store.schema_version() or None
            if schema:
                bound = doctor.Bound(await store.bound_model(), (await store.counts()).indexed)
        except StoreLocked:
            holder = "another process (an image-search `daemon` or `index`)"
        except StoreError as exc:
            fix = "see the message; --database-url to use another"
            return doctor.Check("database", "FAIL", str(exc), fix), None
        finally:
            await store.close()
    return doctor.database(config, schema, SCHEMA_VERSION, holder), bound


async def cmd_benchmark(config: Config, args: argparse.Namespace) -> int:
    from image_search import bench
    from image_search.errors import ModelUnavailable
    from image_search.models import DEFAULT_MODEL, RANDOM_CONFIGS, ModelSource, report_path

    # Random weights: the named model's published shapes where shipped, else the default's.
    wanted = config.model or DEFAULT_MODEL
    shaped = wanted if wanted in RANDOM_CONFIGS else DEFAULT_MODEL
    source = ModelSource(shaped if args.random_weights else wanted, random_weights=args.random_weights)
    if not source.random_weights and source.looks_like_a_folder:  # a typo: say so, measure nothing
        raise source.unavailable(FileNotFoundError(wanted))
    if not source.random_weights:
        try:
            source.crop_spec()
        except ModelUnavailable as exc:
            log.warning("%s\nmeasuring %s's architecture with random weights instead", exc, shaped)
            source = ModelSource(shaped, random_weights=True)
    print(
        bench.QUICK if args.quick else "full: text, image batches of 1 to 100, preprocessing, search to 1M",
        file=sys.stderr,
    )
    report = await asyncio.to_thread(bench.run, source, config.device, config.dtype, quick=args.quick)
    print(json.dumps(report, indent=2) if args.json else bench.table(report))
    saved = report_path(config.cache_dir, source.spec)
    try:  # for `image-search models`: this machine's speed beside the published figures
        saved.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        saved.write_text(json.dumps(report))
    except OSError as exc:
        log.warning("cannot keep the report in %s: %s", saved, exc)
    return 0


def _measured(config: Config, model: str) -> str | None:
    """This machine's best image rate for ``model``, from the report `benchmark` kept."""
    from image_search.models import measured_rate

    found = measured_rate(config.cache_dir, model)
    return None if found is None else f"{found[0]:.1f} img/s on {found[1]}"


async def cmd_models(config: Config, args: argparse.Namespace) -> int:
    """The supported models with the published figures, and this machine's measured image rate
    where `image-search benchmark` has run for that model (with real or random weights)."""
    from image_search.errors import ModelUnavailable
    from image_search.models import DEFAULT_MODEL, KNOWN, ModelSource

    current = config.model or DEFAULT_MODEL
    rows = [{**k.__dict__, "current": k.id == current} for k in KNOWN]
    if current not in {k.id for k in KNOWN}:  # the configured model, known or not
        try:
            family = ModelSource(current).family.name
        except ModelUnavailable:
            family = "?"
        rows.append({"id": current, "family": family, "current": True})
    for row in rows:
        row["measured_here"] = _measured(config, str(row["id"]))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'model':<36} {'family':<9} {'params':>6} {'IN-1k':>6} {'COCO R@1':>9} {'px':>4}  on 2 CPU cores")
    for r in rows:
        mark = "*" if r["current"] else " "
        if "imagenet" not in r:  # a model of the user's own: no published figures here
            print(f"{mark}{r['id']:<35} {r['family']:<9}  here: {r['measured_here'] or 'not measured'}")
            continue
        imagenet, coco = (f"{r[k]:.1f}" if r[k] is not None else "-" for k in ("imagenet", "coco_r1"))
        print(
            f"{mark}{r['id']:<35} {r['family']:<9} {r['vision_params_m']:>5}M {imagenet:>6} "
            f"{coco:>9} {r['input_px']:>4}  {r['cpu']}"
        )
        here = r["measured_here"] or "not measured (image-search benchmark)"
        print(f"  {'':<35} H200: {r['h200_img_s']:,} img/s; here: {here}")
    which = "the configured model" if config.model else "the default for a new library (each keeps its own)"
    print(f"\n* {which}. Published figures: open_clip (CLIP), big_vision (SigLIP 2);")
    print("  NaFlex: px is its patch budget's side (256 patches of 16); its figures vary with the budget.")
    print('Switch: image-search index --reembed --model ID (README, "Choosing a model").')
    return 0


async def cmd_install_service(config: Config, args: argparse.Namespace) -> int:
    from image_search import units
    from image_search.config import config_home, data_home

    script = Path(sys.executable).parent / "image-search"
    executable = str(script) if script.exists() else f"{sys.executable} -m image_search"
    directory = args.output or Path.home() / ".config" / "systemd" / "user"
    names = (
        ["image-search-daemon.service", "image-search-web.service"]
        if args.split
        else ["image-search.service"]
    )
    # The unit may write only these, rendered from this configuration: they must exist before it starts.
    required = [data_home(), config.cache_dir, config.export_dir]
    if config.database_url.startswith(("surrealkv://", "file://", "rocksdb://")):
        required.insert(1, Path(config.database_url.split("://", 1)[1]).parent)
    hf_cache = Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface")
    for folder in (*required, hf_cache):
        try:
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise UserError(f"cannot make {printable(str(folder))}: {exc.strerror or exc}") from None
    writable = units.writable_paths(required, [hf_cache])
    try:
        written = units.install(directory, executable, names, writable)
    except OSError as exc:
        raise UserError(
            f"cannot write the units to {printable(str(directory))}: {exc.strerror or exc}"
        ) from None
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
