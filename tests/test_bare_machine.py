"""The README's first command on a machine that has only what a fresh install has, plus git
(#34, item 1): a Debian 12 and a Debian 13 made with debootstrap, run with podman, a clone of this
checkout inside. `scripts/dev install run` must install what it needs by the distribution's own
names (python3-venv among them), then `image-search doctor`, an index and a search with a tiny
model run from outside the checkout.

Slow (debootstrap, then the distribution's packages and the Python ones: minutes each), so not in
CI's run: `scripts/dev test-all tests/test_bare_machine.py -s`. Needs podman, runc, debootstrap
and root. Debian's mirror and PyPI are reachable from this machine; pytorch.org is not, so this
machine's wheel folder and pip indexes are mounted read-only (as tests/test_container.py does) for
the torch that scripts/dev asks pytorch.org's CPU index for, with its CA bundle (its
HTTPS goes through a proxy of its own). Ubuntu 24.04 cannot be made here (no
Ubuntu mirror can be reached, and this debootstrap has no noble script): scripts/dev's Ubuntu
names (no Debian chromium: Ubuntu's is a snap) are untested.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from .test_container import CONF, PIP_CONF, PIP_PATHS, debian_image, podman

pytestmark = pytest.mark.slow

TOP = Path(__file__).resolve().parents[1]

INSIDE = r"""
set -eu
cd /src
scripts/dev install run
/src/.venv/bin/image-search doctor || true  # a fresh machine has notes (no GPU, no roots)
mkdir -p /tmp/elsewhere && cd /tmp/elsewhere
/src/.venv/bin/python - <<'PY'
from pathlib import Path
from PIL import Image
import numpy as np
from image_search.testing import build_tiny_clip
build_tiny_clip(Path("/tmp/tiny"))
rng = np.random.default_rng(0)
Path("/tmp/photos").mkdir()
for i in range(6):
    Image.fromarray(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(f"/tmp/photos/{i}.jpg")
PY
export IMAGE_SEARCH_MODEL=/tmp/tiny
/src/.venv/bin/image-search index /tmp/photos
/src/.venv/bin/image-search search "a dog" --limit 3
echo BARE-MACHINE-OK
"""


@pytest.mark.parametrize("release", ["bookworm", "trixie"])
def test_the_first_command_on_a_bare_debian(release: str, tmp_path: Path) -> None:
    for tool in ("podman", "runc", "debootstrap", "git"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed: apt-get install podman runc debootstrap git")
    if os.geteuid() != 0:
        pytest.skip("debootstrap and this podman set-up need root")
    (tmp_path / "containers.conf").write_text(CONF)
    os.environ["CONTAINERS_CONF"] = str(tmp_path / "containers.conf")
    base = f"localhost/image-search-bare:{release}"
    # minbase and what a fresh install has besides (Python 3, git); no python3-venv.
    debian_image(base, release, "python3,git,ca-certificates", tmp_path / "rootfs")
    clone = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", str(TOP), str(clone)], check=True, timeout=300)
    (tmp_path / "pip.conf").write_text(PIP_CONF)
    mounts = [f"-v={clone}:/src", f"-v={tmp_path / 'pip.conf'}:/etc/pip.conf:ro"]
    mounts += [f"-v={p}:{p}:ro" for p in PIP_PATHS if Path(p).exists()]  # its CA bundle too (a proxy)
    run = podman(
        "run", "--rm", "--network=host", *mounts, base, "bash", "-c", INSIDE, check=False, timeout=2400
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0 and "BARE-MACHINE-OK" in output, output[-4000:]
    assert "python3-venv" in output or "venv" in output  # scripts/dev installed it (not in minbase)
    assert "Traceback" not in output, output[-4000:]
