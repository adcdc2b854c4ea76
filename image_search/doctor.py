"""``image-search doctor``: what this machine and configuration will do, and what to fix first.

Each check is one line: ``ok``, ``note`` (worth knowing, works as it is) or ``FAIL`` (it will not
work; the line says the fix). Nothing is changed: the database is opened without migrating it, the
port is only tried, and no model is loaded (only its files are looked for).
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Config
from .errors import ModelUnavailable

if TYPE_CHECKING:
    from .store import ModelIdentity

INOTIFY_LIMIT = Path("/proc/sys/fs/inotify/max_user_watches")
MAX_COUNTED_FOLDERS = 1_000_000  # stop counting folders here: the answer is already clear
ROOM = 1 << 30  # below this free beside the database, doctor fails (the store pauses writes at 64 MiB)


@dataclass
class Check:
    name: str
    level: str  # ok | note | FAIL
    what: str
    fix: str = ""

    def line(self) -> str:
        fix = f"\n{'':<16}fix: {self.fix}" if self.fix else ""
        return f"{self.level:<4}  {self.name:<9} {self.what}{fix}"

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


def device(config: Config) -> Check:
    """The device that will embed, and why not a GPU that is there."""
    import torch

    from .errors import ModelUnavailable
    from .models.model import pick_device

    try:
        chosen = pick_device(config.device)
    except ModelUnavailable as exc:
        return Check("device", "FAIL", str(exc), "set device = auto, or install the torch build for it")
    if chosen.type != "cpu":
        name = torch.cuda.get_device_name(chosen) if chosen.type == "cuda" else chosen.type
        return Check("device", "ok", f"{chosen} ({name}), torch {torch.__version__}")
    present = gpus_present()
    if not present:
        return Check("device", "ok", f"cpu ({os.cpu_count()} cores): no GPU on this machine")
    build = "CPU-only" if torch.version.cuda is None and torch.version.hip is None else "GPU"
    one = len(present) == 1
    return Check(
        "device",
        "note",
        f"cpu, although {', '.join(present)} {'is' if one else 'are'} here: "
        f"torch {torch.__version__} is a {build} build that cannot use {'it' if one else 'them'}",
        "install the torch build for that GPU (pytorch.org: CUDA, ROCm or XPU), or in a container pass "
        "the device through (--device /dev/dri, /dev/kfd, or NVIDIA's CDI)",
    )


def gpus_present() -> list[str]:
    """GPUs the kernel shows, whatever torch can do with them."""
    found = []
    if any(Path("/dev").glob("nvidia[0-9]*")):
        found.append("an NVIDIA GPU (/dev/nvidia*)")
    if Path("/dev/kfd").exists():
        found.append("an AMD GPU (/dev/kfd)")
    elif any(Path("/dev/dri").glob("renderD*")) and not found:
        found.append("a GPU render node (/dev/dri)")
    return found


@dataclass(frozen=True)
class Bound:
    """What the database says of its model: the identity its vectors carry and how many it holds
    (None where it could not be read: held by a running service, or not made yet)."""

    identity: ModelIdentity | None
    photos: int


def model(config: Config, bound: Bound | None = None, holder: str | None = None) -> Check:
    """The model the commands will use (:func:`.checkpoint.chosen_source`): can it be loaded,
    is it the library's, and what a switch to another would cost here."""
    from .models.model import DEFAULT_MODEL, chosen_source

    if bound is None and holder is not None and not config.model:
        return Check("model", "ok", f"the library's, which {holder} uses (`image-search status` names it)")

    library = bound.identity if bound is not None else None
    try:
        source = chosen_source(config.model, library)
    except ModelUnavailable as exc:
        return Check(
            "model", "FAIL", str(exc), "point --model (model in the configuration) at the model's folder"
        )
    spec = source.spec
    if library is not None and config.model and source.identity().name != library.name:
        return Check(
            "model",
            "FAIL",
            f"the configured model {config.model} is not the library's ({library.typed or library.name}): "
            "its vectors cannot be searched with another model's",
            f"remove model from the configuration to use the library's, or `image-search index --reembed "
            f"--model {config.model}` ({_cost(config, library, bound)})",
        )
    if library is None:
        whose = "the configured model" if config.model else "the default for a new library"
    else:
        whose = f"the library's model, {bound.photos if bound else 0:,} photos"
    if source.random_weights:
        return Check("model", "ok", f"{spec} with random weights ({whose})")
    if source.is_local:
        folder = Path(source.location)
        if not (folder / "config.json").is_file():
            return Check(
                "model", "FAIL", f"{folder} has no config.json", "point --model at a CLIP or SigLIP folder"
            )
        return Check("model", "ok", f"{folder} ({whose}; weights {source.content or 'not found'})")
    from .models.weights import hub_snapshot

    switch = f"; {_cost(config, library, bound)}" if library is not None else ""
    if hub_snapshot(spec) is not None:
        return Check("model", "ok", f"{spec} in the Hugging Face cache ({whose}{switch})")
    offline = os.environ.get("HF_HUB_OFFLINE") == "1"
    size = {DEFAULT_MODEL: "1.5 GB", "openai/clip-vit-large-patch14": "1.7 GB"}.get(spec, "its weights")
    return Check(
        "model",
        "FAIL" if offline else "note",
        f"{spec} ({whose}) is not in the Hugging Face cache"
        + (" and HF_HUB_OFFLINE=1 forbids it" if offline else f": the first start downloads {size}"),
        f"hf download {spec} (on a machine with internet access), or --model FOLDER",
    )


def _cost(config: Config, library: ModelIdentity, bound: Bound | None) -> str:
    """What embedding the library again with another model costs, measured here or not."""
    from .models.switching import describe, switch_costs

    photos = bound.photos if bound is not None else 0
    costs = switch_costs(config.cache_dir, library.typed or library.name, photos)
    return "a switch re-embeds every photo: " + "; ".join(describe(c) for c in costs[:2])


def database(config: Config, schema: int | None, expected: int, holder: str | None) -> Check:
    """Where the database is, whether it can be written, the room beside it, its schema."""
    url = config.database_url
    if not url.startswith(("surrealkv://", "file://", "rocksdb://")):
        return Check("database", "ok", f"{url} (not on this disk)")
    folder = Path(url.split("://", 1)[1]).expanduser()
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        return Check(
            "database", "FAIL", f"{folder}: {existing} is not writable", "--database-url surrealkv://DIR"
        )
    free = shutil.disk_usage(existing).free
    room = f"{free / 2**30:.1f} GiB free"
    if holder:
        state = f"in use by {holder}"
    elif schema is None:
        state = "new"
    elif schema > expected:
        return Check(
            "database",
            "FAIL",
            f"{folder}: schema {schema} is newer than this version's {expected}",
            "upgrade image-search",
        )
    else:
        state = f"schema {schema}" + (
            f" (migrated to {expected} at the next start)" if schema < expected else ""
        )
    level = "FAIL" if free < ROOM else "ok"
    fix = "free disk space, or move the database (--database-url)" if level == "FAIL" else ""
    return Check("database", level, f"{folder}, {state}, {room}", fix)


def count_folders(roots: list[Path], most: int = MAX_COUNTED_FOLDERS) -> int:
    count = 0
    for root in roots:
        for _, dirs, _ in os.walk(root):
            count += 1
            if count >= most:
                return count
            dirs[:] = [d for d in dirs if not d.startswith(".")]
    return count


def inotify(roots: list[Path], limit: int | None = None, folders: int | None = None) -> Check:
    """One inotify watch per folder: the kernel's limit must exceed the folders to watch."""
    if limit is None:
        try:
            limit = int(INOTIFY_LIMIT.read_text())
        except (OSError, ValueError):
            return Check("inotify", "note", "no inotify limit to read (not Linux?): watching may poll")
    if not roots:
        return Check("inotify", "note", f"limit {limit:,}; no picture folders configured (roots)")
    if folders is None:
        folders = count_folders(roots)
    if folders >= limit:
        wanted = 1 << max(folders * 2, 8192).bit_length()
        return Check(
            "inotify",
            "FAIL",
            f"{folders:,} folders to watch, the limit is {limit:,}: new photos in the rest go unseen "
            "until the periodic reconcile",
            f"echo fs.inotify.max_user_watches={wanted} | sudo tee /etc/sysctl.d/90-image-search.conf "
            "&& sudo sysctl --system",
        )
    return Check("inotify", "ok", f"{folders:,} folders to watch, limit {limit:,}")


def port(config: Config, holder: str | None) -> Check:
    where = f"{config.host}:{config.port}"
    if holder:
        return Check("port", "ok", f"{where}: served by {holder}")
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    with socket.socket(family) as s:
        try:
            s.bind((config.host, config.port))
        except OSError as exc:
            return Check(
                "port", "FAIL", f"{where}: {exc.strerror or exc}", "--port N (or stop what holds it)"
            )
    return Check("port", "ok", f"{where} is free")


def token(config: Config) -> Check:
    from .running import is_loopback

    if config.token:
        return Check("token", "ok", "set: every route but /api/health needs it")
    if is_loopback(config.host):
        if os.access("/proc/net/tcp", os.R_OK):
            return Check("token", "ok", "none needed on loopback: the kernel says which account connects")
        return Check("token", "note", "none set, and /proc cannot tell who connects: one is printed at start")
    return Check(
        "token",
        "note",
        f"none set for {config.host}: a new one is printed at every start",
        "set token (IMAGE_SEARCH_TOKEN or a podman secret) to keep one",
    )


def service(home: Path | None = None) -> Check:
    unit = (home or Path.home()) / ".config" / "systemd" / "user" / "image-search.service"
    if unit.exists():
        return Check("service", "ok", f"{unit} installed (systemctl --user status image-search)")
    return Check("service", "note", "no systemd user unit installed", "image-search install-service")


def container() -> Check | None:
    """Inside a container: the devices passed through."""
    if not (
        Path("/run/.containerenv").exists() or Path("/.dockerenv").exists() or os.environ.get("container")
    ):
        return None
    passed = [
        name
        for name, there in (
            ("/dev/dri", Path("/dev/dri").is_dir()),
            ("/dev/kfd", Path("/dev/kfd").exists()),
            ("NVIDIA (CDI)", any(Path("/dev").glob("nvidia[0-9]*"))),
        )
        if there
    ]
    if passed:
        return Check("container", "ok", f"devices passed through: {', '.join(passed)}")
    return Check(
        "container",
        "note",
        "no GPU device passed through: embedding runs on the CPU",
        "podman run --device /dev/dri (Intel), --device /dev/kfd --device /dev/dri (AMD), "
        "--device nvidia.com/gpu=all (NVIDIA CDI)",
    )


def static_checks(config: Config, holder: str | None, bound: Bound | None = None) -> Iterator[Check]:
    yield device(config)
    yield model(config, bound, holder)
    yield inotify([Path(r) for r in config.roots])
    yield port(config, holder)
    yield token(config)
    yield service()
    inside = container()
    if inside is not None:
        yield inside
