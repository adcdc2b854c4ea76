"""The program as a user installs it: the wheel built from this checkout, installed into a fresh
virtual environment (the pinned CPU torch first, as the README says), and every command run from
a folder outside the checkout, so nothing of the checkout is on ``sys.path``. A packaging mistake
(a module left out, a shell imported by the core) fails here and nowhere else."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from .conftest import free_port, until_sync

TOP = Path(__file__).parents[1]
TORCH = "torch==2.13.0"


def run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=900, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``image-search`` command of a fresh venv with the wheel of this checkout: built from a
    copy of the files git knows, so that nothing a build left here (a stale ``build/lib`` with
    modules since moved) can slip into the wheel and hide a missing one."""
    where = tmp_path_factory.mktemp("installed")
    source = where / "source"
    listed = run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=TOP)
    assert listed.returncode == 0, listed.stderr
    for name in filter(None, listed.stdout.split("\0")):
        if (TOP / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TOP / name, source / name)
    build = run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(where),
            str(source),
        ]
    )
    assert build.returncode == 0, build.stderr[-3000:]
    # Quiet: a new user takes a wall of our packaging's warnings for errors.
    assert "Warning" not in build.stderr + build.stdout, build.stderr[-3000:]
    wheel = next(where.glob("image_search-*.whl"))
    venv = where / "venv"
    assert run([sys.executable, "-m", "venv", str(venv)]).returncode == 0
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    for step in ([TORCH], [str(wheel)]):
        done = run([*pip, *step])
        assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin" / "image-search"


@pytest.fixture
def user(cli_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """A user's environment: nothing of the checkout on the path, the tiny model, an empty home."""
    env = {k: v for k, v in cli_env.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return env


def command(exe: Path, env: dict[str, str], cwd: Path, *args: str, code: int = 0) -> str:
    proc = run([str(exe), *args], env=env, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == code, f"{args}: {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc.stdout


def test_every_command_of_the_installed_program(
    installed: Path, user: dict[str, str], photo_dir: Path, tmp_path: Path
) -> None:
    away = tmp_path / "elsewhere"
    away.mkdir()
    python = installed.parent / "python"
    where = run([str(python), "-c", "import image_search; print(image_search.__file__)"], cwd=away, env=user)
    assert "site-packages" in where.stdout and str(TOP) not in where.stdout

    def cmd(*args: str, code: int = 0) -> str:
        return command(installed, user, away, *args, code=code)

    summary = json.loads(cmd("index", str(photo_dir), "--json"))
    assert summary["indexed"] > 0 and not summary["failed"]
    assert len(json.loads(cmd("search", "a green meadow", "--limit", "3", "--json"))) == 3
    assert len(json.loads(cmd("search", "meadow + flower - city", "--limit", "3", "--json"))) == 3
    assert json.loads(cmd("status", "--json"))["indexed"] == summary["indexed"]
    assert "groups" in json.loads(cmd("duplicates", "--json"))
    assert json.loads(cmd("albums", "--json")) == []
    save = (
        "import asyncio, sys\n"
        "from image_search.search import albums\n"
        "from image_search.config import load_config\n"
        "from image_search.store import Store\n"
        "async def main():\n"
        "    async with Store.from_config(load_config({})) as store:\n"
        "        keys, matrix = await store.load_embeddings((await store.stored_model()))\n"
        "        await albums.save_album(store, albums.Album(name='Meadows', liked=keys[:1], min_score=0.5,\n"
        "            vector=matrix[0].astype('float32'), model=await store.stored_model()))\n"
        "asyncio.run(main())\n"
        # as the console entry point does (cli.run): the embedded engine can abort at
        # interpreter finalisation, after everything was written and closed
        "sys.stdout.flush(); import os; os._exit(0)\n"
    )
    saved = run([str(python), "-c", save], cwd=away, env=user)
    assert saved.returncode == 0, saved.stderr
    assert [a["name"] for a in json.loads(cmd("albums", "--json"))] == ["Meadows"]
    assert cmd("album", "Meadows").strip()
    assert (
        "links"
        in run(
            [str(installed), "album", "Meadows", "--links", str(tmp_path / "out")], env=user, cwd=away
        ).stderr
    )
    assert (tmp_path / "out").is_dir() and any((tmp_path / "out").iterdir())
    cmd("album", "No such album", code=1)
    cmd("install-service", "--output", str(tmp_path / "units"))
    assert (tmp_path / "units" / "image-search.service").is_file()
    checks = {c["name"]: c["level"] for c in json.loads(cmd("doctor", "--json", "--port", str(free_port())))}
    assert checks["model"] == checks["database"] == checks["port"] == "ok", checks
    serve_answers_health(installed, user, away, photo_dir)


def serve_answers_health(exe: Path, env: dict[str, str], cwd: Path, photos: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [str(exe), "serve", str(photos), "--port", str(port)],
        env=env,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def healthy() -> bool:
            assert proc.poll() is None, proc.communicate()[1][-2000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=2) as r:
                    return json.load(r) == {"status": "ok"}
            except OSError:
                return False

        until_sync(healthy, limit=120, every=0.2, what="serve answers /api/health")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]


@pytest.mark.slow
def test_the_installed_benchmark(installed: Path, user: dict[str, str], tmp_path: Path) -> None:
    """``benchmark --quick --random-weights``: the default's architecture on the CPU, within a
    minute on two cores, naming what it ran."""
    before = {m["id"]: m for m in json.loads(command(installed, user, tmp_path, "models", "--json"))}
    # The five known checkpoints, then the configured one (the tiny test model) marked current;
    # nothing measured yet.
    assert [m["current"] for m in before.values()] == [False] * 5 + [True]
    assert not any(m["measured_here"] for m in before.values())
    out = json.loads(command(installed, user, tmp_path, "benchmark", "--quick", "--random-weights", "--json"))
    assert any(r["name"].startswith("text, one query, ") for r in out["results"])
    assert out["environment"]["run"] == "quick"
    assert out["environment"]["weights"].startswith("random (google/siglip2-base-patch16-224's architecture")
    # `models` now shows this machine's rate for the model measured, and only for it.
    after = {
        m["id"]: m["measured_here"]
        for m in json.loads(command(installed, user, tmp_path, "models", "--json"))
    }
    assert "img/s on" in after.pop("google/siglip2-base-patch16-224") and not any(after.values())


def test_nothing_of_the_checkout_is_needed() -> None:
    """The wheel lists the packages the program imports: the shells are mapped into it."""
    pyproject = (TOP / "pyproject.toml").read_text()
    for package in ("image_search.cli", "image_search.store", "image_search.daemon", "image_search.webui"):
        assert f'"{package}"' in pyproject
    assert os.path.isdir(TOP / "webui" / "static")
