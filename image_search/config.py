"""One typed configuration, read from four places.

Precedence, highest first: command-line flag > environment (``IMAGE_SEARCH_*``) > TOML file
(``$XDG_CONFIG_HOME/image-search/config.toml``) > default. Every option is a field of
:class:`Config`; its metadata says how it is parsed and documented, and the README's table
is checked against these fields by a test.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "IMAGE_SEARCH_"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the option and its source."""


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    return Path(value) if value else Path.home() / fallback


def data_home() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "image-search"


def config_home() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "image-search"


def cache_home() -> Path:
    return _xdg("XDG_CACHE_HOME", ".cache") / "image-search"


def _paths(value: Any) -> list[Path]:
    if isinstance(value, str):
        value = [v for v in value.split(os.pathsep) if v]
    return [Path(v).expanduser() for v in value]


def _patterns(value: Any) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off"}:
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip().lower()
        if text not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return text

    parse.choices = choices  # type: ignore[attr-defined]  # for the README's test
    return parse


def _positive(kind: type) -> Callable[[Any], Any]:
    def parse(value: Any) -> Any:
        number = kind(value)
        if number <= 0:
            raise ValueError(f"must be greater than 0, got {value!r}")
        return number

    return parse


def _port(value: Any) -> int:
    number = int(value)
    if not 0 <= number <= 65535:
        raise ValueError(f"not a TCP port: {value!r}")
    return number


def _optional_path(value: Any) -> Path | None:
    return Path(value).expanduser() if value not in (None, "") else None


def _str(value: Any) -> str:
    return str(value)


def _secret(value: Any) -> str | None:
    """A token or password as given, without the whitespace around it: `podman secret create …
    <<< "$(openssl rand -hex 24)"` stores a trailing newline, and so does `echo` into a file."""
    text = str(value).strip()
    return text or None


def _opt(
    default: Any = None,
    *,
    parse: Callable[[Any], Any] = _str,
    help: str,
    factory: Callable[[], Any] | None = None,
    cli: bool = True,
    secret: bool = False,
    metavar: str | None = None,
) -> Any:
    meta = {"parse": parse, "help": help, "cli": cli, "secret": secret, "metavar": metavar}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class Config:
    """Every setting of image-search. Build it with :func:`load_config`."""

    roots: list[Path] = _opt(
        factory=list,
        parse=_paths,
        metavar="PATH",
        help="Picture folders to index and watch (several; in the environment separated by ':').",
    )
    database_url: str = _opt(
        factory=lambda: f"surrealkv://{data_home() / 'db'}",
        help="SurrealDB location: surrealkv://DIR (embedded, default under $XDG_DATA_HOME/image-search/), "
        "mem:// (in memory, lost on exit), ws://HOST:PORT or wss://… (a SurrealDB server).",
    )
    namespace: str = _opt("image_search", help="SurrealDB namespace.")
    database: str = _opt("main", help="SurrealDB database name.")
    db_user: str | None = _opt(None, help="User for a ws:// or wss:// server (embedded needs none).")
    db_password: str | None = _opt(
        None,
        parse=_secret,
        cli=False,
        secret=True,
        help="Password for the server user. Environment or config file only, never a flag.",
    )
    db_password_file: Path | None = _opt(
        None,
        parse=_optional_path,
        help="File whose first line is the server password (for systemd credentials or podman secrets).",
    )
    model: str | None = _opt(
        None,
        help="Model: a CLIP or SigLIP (SigLIP 2) checkpoint, as a Hugging Face id (from the usual cache, "
        "HF_HOME honoured) or a local directory. Unset: the model the library was embedded with; for "
        "a new library google/siglip2-base-patch16-224.",
    )
    device: str = _opt(
        "auto",
        parse=_choice("auto", "cuda", "xpu", "mps", "cpu"),
        help="Where images are embedded: auto picks CUDA (also ROCm builds), then Intel XPU, Apple MPS, "
        "else the CPU; or cuda, xpu, mps, cpu.",
    )
    dtype: str = _opt(
        "auto",
        parse=_choice("auto", "float16", "bfloat16", "float32", "int8"),
        help="Image model precision: auto is float16 on a GPU; on the CPU bfloat16 where it is native "
        "(AVX512-BF16 or AMX), else int8 (CPU only: dynamic quantisation, kept only where the model's "
        "embeddings stay within cosine 0.99 of float32's, checked when it loads; else float32).",
    )
    text_dtype: str = _opt(
        "auto",
        parse=_choice("auto", "int8", "float32", "bfloat16"),
        help="Text model on the CPU: auto is bfloat16 where the CPU has it natively (AVX512-BF16 or AMX), "
        "else int8 (dynamic quantisation, 2-4x faster than float32); or float32.",
    )
    text_compile: str = _opt(
        "off",
        parse=_choice("auto", "on", "off"),
        help="Compile the server's text model for single queries (torch.compile, on a thread of its own "
        "after start; eager until then; costs memory beside the eager one): auto does it for bfloat16 "
        "SigLIP text where g++ is found; on also for float32; off (the default) never.",
    )
    batch_size: int = _opt(
        0,
        parse=lambda v: _check_nonneg(int(v)),
        help="Images per model batch; 0 picks 256 on a GPU and 16 on the CPU.",
    )
    workers: int = _opt(
        0,
        parse=lambda v: _check_nonneg(int(v)),
        help="Decoding processes; 0 means one per CPU core.",
    )
    host: str = _opt("127.0.0.1", help="Address the web server listens on.")
    port: int = _opt(3000, parse=_port, help="Port the web server listens on.")
    token: str | None = _opt(
        None,
        parse=_secret,
        cli=False,
        secret=True,
        help="Access token for the web server. Required when it listens beyond loopback; generated and "
        "printed once if unset. Environment or config file only.",
    )
    cache_dir: Path = _opt(
        factory=cache_home,
        parse=lambda v: Path(v).expanduser(),
        help="Cache directory (thumbnails), default $XDG_CACHE_HOME/image-search/.",
    )
    export_dir: Path = _opt(
        factory=lambda: data_home() / "exports",
        parse=lambda v: Path(v).expanduser(),
        help="Where the web UI may create album folders of links (inside it only), default "
        "$XDG_DATA_HOME/image-search/exports/.",
    )
    include: list[str] = _opt(
        factory=list,
        parse=_patterns,
        metavar="GLOB",
        help="Only index files whose path relative to its root matches one of these globs, at any "
        "depth (repeat the flag; comma-separated in the environment).",
    )
    exclude: list[str] = _opt(
        factory=list,
        parse=_patterns,
        metavar="GLOB",
        help="Skip files and folders whose path relative to its root, or name, matches one of these "
        "globs, at any depth (repeat the flag; comma-separated in the environment).",
    )
    follow_symlinks: bool = _opt(
        False,
        parse=_bool,
        help="Follow symbolic links inside the picture folders (loops are detected).",
    )
    file_times: bool = _opt(
        False,
        parse=_bool,
        help="Date photos that record no date taken by their file's modification time (else Undated).",
    )
    settle: float = _opt(
        2.0,
        parse=_positive(float),
        help="Seconds a new or changed file's size and mtime must stay unchanged before it is indexed.",
    )
    reconcile_interval: float = _opt(
        6.0,
        parse=lambda v: _check_nonneg(float(v)),
        help="Hours between full reconcile scans of every root (0 turns them off; SIGHUP runs one now).",
    )
    compile: bool = _opt(
        False,
        parse=_bool,
        help="torch.compile the image model: faster batches after a warm-up (on a CPU: frozen for oneDNN).",
    )
    gpu_decode: str = _opt(
        "auto",
        parse=_choice("auto", "on", "off"),
        help="Decode JPEGs on a CUDA GPU (nvJPEG) beside the CPU workers: auto and on use it where "
        "available (on warns where it is not); off never.",
    )
    gpus: int = _opt(
        0,
        parse=lambda v: _check_nonneg(int(v)),
        help="CUDA GPUs that run the image model: 0 starts with one and adds the next while the "
        "decoders keep more busy (nvJPEG always decodes on the first).",
    )
    max_megapixels: float = _opt(
        100.0,
        parse=_positive(float),
        help="Refuse images larger than this many megapixels (and decompression bombs); recorded as failed.",
    )

    duplicate_similarity: float = _opt(
        0.0,
        parse=lambda v: float(v) if float(v) == 0 else _between(float(v), 0.5, 1.0),
        help="Near-duplicates: the image cosine two photos must reach before their fingerprints are "
        "compared; 0 means the model family's default (CLIP 0.92, SigLIP 0.85).",
    )
    duplicate_hash_bits: int = _opt(
        10,
        parse=lambda v: int(_between(int(v), 0, 32)),
        help="Near-duplicates: the most bits (of 64) in which two photos' perceptual hashes may differ.",
    )

    @property
    def password(self) -> str | None:
        """The server password: from the environment/config, else the password file."""
        if self.db_password:
            return self.db_password
        if self.db_password_file:
            try:
                return self.db_password_file.read_text().splitlines()[0].strip()
            except (OSError, IndexError) as exc:
                raise ConfigError(
                    f"db_password_file {self.db_password_file}: cannot read it ({exc})"
                ) from exc
        return None


def _between(value: Any, low: float, high: float) -> Any:
    if not low <= value <= high:
        raise ValueError(f"must be from {low:g} to {high:g}, got {value}")
    return value


def _check_nonneg(value: Any) -> Any:
    if value < 0:
        raise ValueError(f"must be 0 or more, got {value}")
    return value


def options() -> list[dataclasses.Field[Any]]:
    """The fields of :class:`Config`, in order: what the README documents and the CLI offers."""
    return list(dataclasses.fields(Config))


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def default_config_file() -> Path:
    return config_home() / "config.toml"


def load_config(
    cli: Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Config:
    """Merge defaults < TOML file < environment < CLI values into a :class:`Config`.

    ``cli`` holds only the flags the user gave (``None`` values are ignored). A config file
    named explicitly (flag or ``IMAGE_SEARCH_CONFIG``) must exist; the default one may not.
    """
    environ = os.environ if environ is None else environ
    cli = {k: v for k, v in (cli or {}).items() if v is not None}
    explicit = config_file or (
        Path(environ["IMAGE_SEARCH_CONFIG"]) if environ.get("IMAGE_SEARCH_CONFIG") else None
    )
    path = explicit or default_config_file()
    from_file: dict[str, Any] = {}
    if explicit is not None or path.exists():
        try:
            from_file = tomllib.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from exc
    known = {f.name for f in options()}
    unknown = sorted(set(from_file) - known)
    if unknown:
        raise ConfigError(f"config file {path}: unknown option(s) {', '.join(unknown)}")

    values: dict[str, Any] = {}
    for f in options():
        parse = f.metadata["parse"]
        for source, raw in (
            (f"config file {path}", from_file.get(f.name)),
            (f"environment {env_name(f.name)}", environ.get(env_name(f.name))),
            (f"option --{f.name.replace('_', '-')}", cli.get(f.name)),
        ):
            if raw is None:
                continue
            try:
                values[f.name] = parse(raw)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{f.name} from {source}: {exc}") from None
    return Config(**values)


def beside_database(url: str, suffix: str) -> Path | None:
    """``DIR<suffix>`` beside an embedded database folder ``DIR``; None for mem:// and servers
    (where the running service's file and the library snapshot live)."""
    if not url.startswith(("surrealkv://", "file://", "rocksdb://")):
        return None
    folder = Path(url.split("://", 1)[1]).expanduser()
    return folder.with_name(folder.name + suffix)
