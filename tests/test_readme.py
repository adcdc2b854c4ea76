"""The README keeps its promises where a test can tell: every command and flag it names exists,
every route of its API table (docs/web-api.md) is served, every file it points to is in the repository."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from image_search.cli import build_parser
from webui.routes import ROUTES

from .test_web_api import client  # noqa: F401  (fixture)

TOP = Path(__file__).parents[1]
README = (TOP / "README.md").read_text()
API = (TOP / "docs" / "web-api.md").read_text()  # the README links its API table


def subcommands() -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def named_commands() -> list[tuple[str, list[str]]]:
    """Each `image-search COMMAND ...` the README shows in code, with the flags written after it."""
    found = []
    for code in re.findall(r"`([^`\n]+)`", README) + re.findall(r"```sh\n(.*?)```", README, re.S):
        for line in code.splitlines():
            for match in re.finditer(r"\bimage-search ([a-z][a-z-]+)((?: +[^#;|]*)?)", line):
                found.append((match.group(1), re.findall(r"(--[a-z][a-z-]*)", match.group(2))))
    return found


def test_every_command_and_flag_in_the_readme_exists() -> None:
    commands = subcommands()
    named = named_commands()
    assert {name for name, _ in named} == set(commands), "a command the README never shows"
    for name, flags in named:
        assert name in commands, f"the README names `image-search {name}`, which does not exist"
        known = {o for action in commands[name]._actions for o in action.option_strings}
        missing = [f for f in flags if f not in known]
        assert not missing, f"`image-search {name}` has no {missing}"


def api_table() -> list[tuple[str, str]]:
    rows = re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/[^`]*)` \|", API, re.M)
    return [(method, re.sub(r"\[.*?\]|\?.*$", "", path)) for method, path in rows]


def test_the_api_table_is_the_route_table() -> None:
    served = {
        (r.method, r.path) for r in ROUTES if isinstance(r, web.RouteDef) and r.path.startswith("/api/")
    }
    documented = set(api_table())
    assert documented == served


async def test_every_documented_route_answers(client: TestClient) -> None:  # noqa: F811
    """A route that exists answers with its own message (a 404 for an unknown id says so), never
    the router's bare "Not Found" or 405."""
    for method, path in api_table():
        url = path.replace("{id}", "0123456789abcdef")
        response = await client.request(method, url, json={} if method in ("POST", "PUT", "PATCH") else None)
        assert response.status != 405, (method, path)
        if response.status == 404:
            assert (await response.json())["error"] != "Not Found", (method, path)


def test_every_file_the_readme_points_to_exists() -> None:
    linked = re.findall(r"\]\(([^)#:]+)\)", README)
    named = re.findall(
        r"`((?:image_search|tests|benchmarks|scripts|systemd|webui|daemon|docs)/[^`\s]*)`", README
    )
    assert linked and named
    for path in linked + named:
        assert (TOP / path.split("::")[0]).exists(), (
            f"the README points to {path}, which is not in the repository"
        )
    assert "shared/" not in README  # outside the repository: a reader of the repository has no such folder
    for doc in (TOP / "docs").glob("*.md"):
        text = doc.read_text()
        for path in re.findall(r"\]\(([^)#:]+)\)", text):
            assert (doc.parent / path).exists(), f"{doc.name} points to {path}, which is not there"
        for path in re.findall(
            r"`((?:image_search|tests|benchmarks|scripts|systemd|webui|daemon)/[^`\s]*)`", text
        ):
            assert (TOP / path.split("::")[0]).exists(), f"{doc.name} names {path}, which is not there"


def option_rows() -> dict[str, list[str]]:
    """The README's configuration table: option name -> its cells (environment, flag, default, text)."""
    rows = {}
    for line in README.splitlines():
        found = re.match(r"^\| `([a-z_0-9]+)` \| (.*) \|$", line)
        if found:
            rows[found.group(1)] = [cell.strip() for cell in found.group(2).split(" | ")]
    return rows


def test_every_option_reads_the_same_in_the_readme_and_in_help() -> None:
    """Each option has its row; the row names its environment variable and flag as the code
    does; its default is the code's; every value an option takes is named both in the row and
    in --help; a flag given once per value says so in both (--help once said --include took a
    comma-separated list, which indexed nothing)."""
    import dataclasses

    from image_search.cli.options import config_parent
    from image_search.config import env_name, options

    rows = option_rows()
    flags = {a.dest: a for a in config_parent()._actions}
    for f in options():
        assert f.name in rows, f"no README row for option {f.name}"
        env, flag, default, text = rows[f.name][:4]
        assert f"`{env_name(f.name)}`" in env, (f.name, env)
        action = flags.get(f.name)
        if action is None:
            assert f.name == "roots" or "never a flag" in flag, (f.name, flag)
        else:
            assert f"`--{f.name.replace('_', '-')}`" in flag, (f.name, flag)
            repeated = isinstance(action, argparse._AppendAction)
            assert repeated == ("repeatable" in flag), (f.name, flag)
            assert repeated == ("Repeatable" in (action.help or "")), (f.name, action.help)
        for value in getattr(f.metadata["parse"], "choices", ()):
            assert f"`{value}`" in default + text, f"{f.name}: the README does not name {value}"
            helped = action.help or "" if action else f.metadata["help"]
            assert value in helped, f"{f.name} --help lacks {value}"
        value = f.default  # MISSING where it depends on the environment (XDG folders)
        if value is dataclasses.MISSING:
            continue
        if isinstance(value, bool):
            assert default.startswith("on" if value else "off"), (f.name, default)
        elif isinstance(value, int | float | str) and not f.metadata.get("secret"):
            shown = value if not isinstance(value, float) or value != int(value) else int(value)
            assert default.startswith(f"`{shown}`"), (f.name, default, value)
