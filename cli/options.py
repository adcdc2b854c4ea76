"""The options every command shares: the configuration flags, generated from the one typed
configuration (flag > IMAGE_SEARCH_* environment > config file > default), and the roots."""

from __future__ import annotations

import argparse
from pathlib import Path

from image_search.config import Config, load_config, options
from image_search.errors import UsageError
from image_search.pictures import normalise_root


def config_parent() -> argparse.ArgumentParser:
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
            kwargs: dict[str, object] = {"action": argparse.BooleanOptionalAction}
        elif f.type in ("list[str]",):
            kwargs = {"action": "append", "metavar": f.metadata["metavar"]}
        else:
            kwargs = {"metavar": f.metadata["metavar"] or f.name.upper()}
        repeat = " Repeatable." if f.type in ("list[str]",) else ""
        group.add_argument(flag, dest=f.name, default=None, help=f.metadata["help"] + repeat, **kwargs)  # type: ignore[arg-type]
    group.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    return parent


def config_from_args(args: argparse.Namespace) -> Config:
    # PATH arguments are not the roots option: each command decides how they combine with it.
    values = {f.name: getattr(args, f.name, None) for f in options() if f.name != "roots"}
    return load_config(values, config_file=args.config)


def all_roots(config: Config, args: argparse.Namespace) -> list[str]:
    """The configured roots and the PATH arguments, each once."""
    roots = [normalise_root(p) for p in [*config.roots, *(getattr(args, "paths", None) or [])]]
    roots = list(dict.fromkeys(roots))
    if not roots:
        raise UsageError("no picture folders: give PATH arguments or set roots in the configuration")
    return roots


def paths_argument(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH", help=help)


def json_flag(parser: argparse.ArgumentParser, help: str = "Print JSON.") -> None:
    parser.add_argument("--json", action="store_true", help=help)
