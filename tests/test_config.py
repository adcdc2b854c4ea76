"""Configuration: precedence, parsing, errors, and the README documenting every option."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from image_search.cli import build_parser
from image_search.config import Config, ConfigError, env_name, load_config, options

README = Path(__file__).resolve().parents[1] / "README.md"


def test_defaults_follow_xdg(xdg: Path) -> None:
    config = load_config()
    assert config.database_url == f"surrealkv://{xdg / 'xdg_data_home' / 'image-search' / 'db'}"
    assert config.cache_dir == xdg / "xdg_cache_home" / "image-search"
    assert (config.host, config.port) == ("127.0.0.1", 3000)
    assert config.model is None  # the library's own model; a new library takes DEFAULT_MODEL
    assert config.follow_symlinks is False and config.roots == []


def test_flag_beats_environment_beats_file_beats_default(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    file = xdg / "xdg_config_home" / "image-search" / "config.toml"
    file.parent.mkdir(parents=True)
    file.write_text('port = 4000\nbatch_size = 8\nmodel = "/models/file"\nroots = ["/a", "/b"]\n')
    assert load_config().port == 4000
    monkeypatch.setenv("IMAGE_SEARCH_PORT", "5000")
    monkeypatch.setenv("IMAGE_SEARCH_BATCH_SIZE", "32")
    config = load_config({"port": "6000"})
    assert (config.port, config.batch_size, config.model) == (6000, 32, "/models/file")
    assert config.roots == [Path("/a"), Path("/b")]
    monkeypatch.setenv("IMAGE_SEARCH_ROOTS", "/x:/y")
    assert load_config().roots == [Path("/x"), Path("/y")]


def test_bad_values_name_the_option_and_source(xdg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMAGE_SEARCH_PORT", "70000")
    with pytest.raises(ConfigError, match=r"port from environment IMAGE_SEARCH_PORT"):
        load_config()
    monkeypatch.delenv("IMAGE_SEARCH_PORT")
    with pytest.raises(ConfigError, match="device from option --device"):
        load_config({"device": "tpu"})
    with pytest.raises(ConfigError, match="follow_symlinks"):
        load_config({"follow_symlinks": "maybe"})


def test_config_file_errors(xdg: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(config_file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("prot = 1\n")
    with pytest.raises(ConfigError, match=r"unknown option.*prot"):
        load_config(config_file=bad)


def test_password_from_environment_or_file_never_a_flag(
    xdg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["index"]._actions}  # type: ignore[union-attr]
    assert "db_password" not in flags and "db_password_file" in flags
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    assert load_config({"db_password_file": str(secret)}).password == "s3cret"
    monkeypatch.setenv("IMAGE_SEARCH_DB_PASSWORD", "env-pass")
    assert load_config().password == "env-pass"


def test_every_option_is_documented_in_the_readme() -> None:
    """The README's configuration table has a row for each option, with its variable."""
    text = README.read_text()
    table = text[text.index("## Configuration") :]
    for f in options():
        row = re.search(rf"^\| `{f.name}` \|.*$", table, re.MULTILINE)
        assert row, f"README configuration table lacks `{f.name}`"
        assert f"`{env_name(f.name)}`" in row.group(0), f"README row for {f.name} lacks {env_name(f.name)}"
        if f.metadata["cli"] and f.name != "roots":
            assert f"`--{f.name.replace('_', '-')}`" in row.group(0), (
                f"README row for {f.name} lacks its flag"
            )
    assert len(options()) == len(Config.__dataclass_fields__)


def test_tokens_and_passwords_lose_the_whitespace_around_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The README's `podman secret create image-search-token - <<< "$(openssl rand -hex 24)"` stores
    the token with a newline; as IMAGE_SEARCH_TOKEN it must still match what the user types."""
    # What the here-string of that command hands to podman (and so to the environment).
    token = subprocess.run(
        ["bash", "-c", 'cat <<< "$(printf abc123)"'], capture_output=True, text=True
    ).stdout
    assert token == "abc123\n"
    monkeypatch.setenv("IMAGE_SEARCH_TOKEN", token)
    monkeypatch.setenv("IMAGE_SEARCH_DB_PASSWORD", "  pw\n")
    config = load_config({})
    assert config.token == "abc123" and config.password == "pw"


def test_web_takes_picture_folders_as_the_readme_says() -> None:
    args = build_parser().parse_args(["web", "/photos", "/more"])
    assert [str(p) for p in args.paths] == ["/photos", "/more"]
