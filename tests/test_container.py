"""The container as a user runs it (#16, item 2): built from the Containerfile with podman, run
with a read-only folder of real photos, the token from a podman secret and a named data volume.

Slow (a base image from Debian's packages, then torch into the image: minutes), so not in CI's
run: `scripts/dev test-all tests/test_container.py -s`. Needs podman, runc and debootstrap
(`apt-get install podman runc debootstrap`) and root. No registry is needed: the base image is
made with debootstrap and `podman import`; torch and the project's dependencies come from where
pip finds them on this machine (its CA bundle, find-links and indexes are mounted into the build,
never written into the Containerfile).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import free_port, until_sync

pytestmark = pytest.mark.slow

TOP = Path(__file__).resolve().parents[1]
BASE = "localhost/image-search-base:bookworm"
IMAGE = "localhost/image-search:test"
NAME = "image-search-test"
VOLUME = "image-search-test-data"
SECRET = "image-search-test-token"
MIRROR = "http://deb.debian.org/debian"
CONF = '[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = "cgroupfs"\n'
# What pip uses on this machine, mounted read-only into the build's RUN steps.
PIP_CONF = (
    "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nfind-links = /opt/wheels\n"
    "extra-index-url = file:///opt/pypi/simple file:///opt/pypi-more/simple\n"
)
PIP_PATHS = ("/etc/ssl/certs", "/opt/wheels", "/opt/pypi", "/opt/pypi-more")


def podman(
    *args: str, check: bool = True, timeout: float = 900, **kw: object
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["podman", "--runtime", "runc", *args], capture_output=True, text=True, timeout=timeout, **kw
    )
    if check:
        assert proc.returncode == 0, f"podman {' '.join(args[:3])}: {proc.stderr[-3000:]}"
    return proc


def debian_image(name: str, release: str, packages: str, rootfs: Path) -> None:
    """A Debian base image made with debootstrap (minbase and ``packages``) and ``podman import``,
    unless ``name`` exists already."""
    if podman("image", "exists", name, check=False).returncode == 0:
        return
    subprocess.run(
        ["debootstrap", "--variant=minbase", f"--include={packages}", release, str(rootfs), MIRROR],
        check=True,
        capture_output=True,
        timeout=1200,
    )
    with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
        podman("import", "-", name, stdin=tar.stdout)  # the pipe closes with the block (it leaked)


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, float]]:
    for tool in ("podman", "runc", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: apt-get install podman runc debootstrap")
    if os.geteuid() != 0:
        pytest.skip("debootstrap and this podman set-up need root")
    tmp = tmp_path_factory.mktemp("container")
    (tmp / "containers.conf").write_text(CONF)
    os.environ["CONTAINERS_CONF"] = str(tmp / "containers.conf")
    debian_image(BASE, "bookworm", "python3,python3-venv", tmp / "rootfs")
    (tmp / "pip.conf").write_text(PIP_CONF)
    mounts = [f"-v={tmp / 'pip.conf'}:/etc/pip.conf:ro"] + [
        f"-v={p}:{p}:ro" for p in PIP_PATHS if Path(p).exists()
    ]
    start = time.monotonic()
    podman(
        "build",
        "--format=docker",  # OCI images drop HEALTHCHECK
        "--network=host",
        *mounts,
        f"--build-arg=BASE={BASE}",
        "--build-arg=TORCH_INDEX=file:///opt/pypi/simple",
        "--build-arg=TORCH_VERSION=2.13.0+cpu",
        "--build-arg=TORCHVISION_VERSION=",
        "-t",
        IMAGE,
        str(TOP),
        timeout=1800,
    )
    built = time.monotonic() - start
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    print(f"\ncontainer: built in {built:.0f} s (cached layers count as done), {size / 1e6:.0f} MB")
    yield {"seconds": built, "size": size}
    podman("rm", "-f", NAME, check=False)
    podman("volume", "rm", "-f", VOLUME, check=False)
    podman("secret", "rm", SECRET, check=False)


def call(
    port: int, path: str, token: str | None, body: dict[str, object] | None = None
) -> tuple[int, object]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"}
        | ({"Authorization": f"Bearer {token}"} if token else {}),
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, None


def test_the_container_runs_as_a_user_would(
    image: dict[str, float], real_photos: list[Path], tiny_model_dir: Path, tmp_path: Path
) -> None:
    pictures, model = tmp_path / "pictures", tmp_path / "model"
    pictures.mkdir()
    for photo in real_photos:
        shutil.copy(photo, pictures / photo.name)
    shutil.copytree(tiny_model_dir, model)
    for folder in (pictures, model):  # the container's user (uid 1000) reads them
        subprocess.run(["chmod", "-R", "a+rX", str(folder)], check=True)
    token = secrets.token_hex(24)
    podman("secret", "rm", SECRET, check=False)
    podman("secret", "create", SECRET, "-", input=token + "\n")  # as `<<< "$(openssl rand -hex 24)"` does
    port = free_port()
    podman(
        "run",
        "-d",
        f"--name={NAME}",
        "--network=host",
        f"--secret={SECRET},type=env,target=IMAGE_SEARCH_TOKEN",
        # As the Quadlet runs it: no new privileges, no capabilities, a read-only root.
        "--security-opt=no-new-privileges",
        "--cap-drop=all",
        "--read-only",
        f"-e=IMAGE_SEARCH_PORT={port}",
        "-e=IMAGE_SEARCH_MODEL=/model",
        f"-v={pictures}:/pictures:ro",
        f"-v={model}:/model:ro",
        f"-v={VOLUME}:/data",
        IMAGE,
    )
    assert podman("exec", NAME, "id", "-u").stdout.strip() == "1000"
    n = len(list(pictures.iterdir()))

    def status() -> dict[str, object] | None:
        state = podman("inspect", "--format", "{{.State.Status}}", NAME).stdout.strip()
        assert state == "running", podman("logs", NAME).stderr[-3000:]
        try:
            code, body = call(port, "/api/status", token)
        except OSError:
            return None
        return body if code == 200 else None  # type: ignore[return-value]

    def indexed() -> bool:
        now = status()
        return bool(now) and now["indexed"] + now["failed"] >= n and now["state"] == "watching"  # type: ignore[index,operator]

    until_sync(indexed, limit=300, every=1, what="the container indexes the pictures")
    assert call(port, "/api/health", None) == (200, {"status": "ok"})
    assert podman("healthcheck", "run", NAME, check=False).returncode == 0
    assert call(port, "/api/status", None)[0] == 401
    assert call(port, "/api/search", None, {"text": "a meadow"})[0] == 401
    code, found = call(port, "/api/search", token, {"text": "a meadow", "limit": 3})
    assert code == 200 and len(found["results"]) == 3  # type: ignore[index]
    before = status()

    podman("stop", "-t", "30", NAME)  # SIGTERM: a clean exit
    assert podman("inspect", "--format", "{{.State.ExitCode}}", NAME).stdout.strip() == "0"
    logs = podman("logs", NAME)
    assert "Traceback" not in logs.stdout + logs.stderr
    podman("start", NAME)
    until_sync(lambda: status() is not None, limit=300, every=1, what="the container starts again")
    after = status()
    assert after["indexed"] == before["indexed"] and after["searchable"] == before["searchable"]  # type: ignore[index]
    # Loaded from the data volume at start, before any indexing: the first start had none.
    logs = podman("logs", NAME)
    text = logs.stdout + logs.stderr
    assert "0 images ready to search" in text and f"{before['searchable']} images ready to search" in text
    podman("rm", "-f", NAME)
