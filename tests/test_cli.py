"""The command line end to end, as a user runs it: real photos, the embedded database, JSON out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from .conftest import all_gone, descendants, free_port, make_photo, start_serve


def cli(*args: str, env: dict[str, str], check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "image_search", *args], env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return cli_env


def test_index_search_status_on_real_photos(photo_dir: Path, env: dict[str, str], xdg: Path) -> None:
    upright = Image.open(make_photo(photo_dir / "phone" / "portrait.jpg", (400, 300)))
    exif = Image.Exif()
    exif[0x0112] = 6
    upright.save(photo_dir / "phone" / "rotated.jpg", exif=exif)
    (photo_dir / "phone" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    (photo_dir / ".thumbnails").mkdir()
    make_photo(photo_dir / ".thumbnails" / "hidden.jpg")
    photos = [p for p in photo_dir.rglob("*.*") if ".thumbnails" not in p.parts and p.name != "broken.jpg"]

    first = cli("index", str(photo_dir), "--json", env=env)
    summary = json.loads(first.stdout)
    assert summary["indexed"] + summary["reused"] == len(photos)
    assert [Path(f["path"]).name for f in summary["failed"]] == ["broken.jpg"]
    assert (xdg / "data" / "image-search" / "db").is_dir()  # the default place, under XDG_DATA_HOME

    again = json.loads(cli("index", str(photo_dir), "--json", env=env).stdout)
    assert again["unchanged"] == len(photos) + 1 and again["indexed"] == 0

    results = json.loads(cli("search", "a photo of a beach", "--limit", "5", "--json", env=env).stdout)
    assert len(results) == 5
    assert all({"path", "score", "id"} <= set(r) for r in results)
    assert all(Path(r["path"]) in photos for r in results)
    scores = [r["score"] for r in results]
    assert scores == sorted(scores, reverse=True)

    status = json.loads(cli("status", "--json", env=env).stdout)
    assert status["indexed"] == len(photos)
    assert status["failed"] == 1 and status["failed_files"][0]["path"].endswith("broken.jpg")
    assert (
        "not an image" in status["failed_files"][0]["error"] or "cannot" in status["failed_files"][0]["error"]
    )

    # A deleted photo leaves the index on the next run.
    photos[0].unlink()
    removed = json.loads(cli("index", str(photo_dir), "--json", env=env).stdout)
    assert removed["removed"] == 1
    assert json.loads(cli("status", "--json", env=env).stdout)["indexed"] == len(photos) - 1


def test_text_output_and_progress(photo_dir: Path, env: dict[str, str]) -> None:
    out = cli("index", str(photo_dir), env=env)
    assert "indexed" in out.stdout and "img/s" in out.stdout
    text = cli("search", "mountain", "--limit", "2", env=env).stdout.splitlines()
    assert len(text) == 2 and all(line.split("  ", 1)[1].startswith(str(photo_dir)) for line in text)


def test_models_lists_the_families_and_what_this_machine_measured(env: dict[str, str]) -> None:
    """`models`: the five known checkpoints and the configured one (here the tiny CLIP), whose
    rate appears once `benchmark` has measured it."""
    before = {m["id"]: m for m in json.loads(cli("models", "--json", env=env).stdout)}
    configured = env["IMAGE_SEARCH_MODEL"]
    assert len(before) == 6 and before[configured]["current"] and before[configured]["family"] == "CLIP"
    assert before["google/siglip2-base-patch16-224"]["coco_r1"] == 52.1
    assert not any(m["measured_here"] for m in before.values())
    report = json.loads(cli("benchmark", "--quick", "--json", env=env).stdout)
    best = next(r for r in report["results"] if r["name"].startswith("image embedding, best batch"))
    after = {m["id"]: m["measured_here"] for m in json.loads(cli("models", "--json", env=env).stdout)}
    assert after.pop(configured) == f"{best['rate']:.1f} img/s on {report['environment']['cores']} CPU cores"
    assert not any(after.values())
    assert before["google/siglip2-base-patch16-naflex"]["family"] == "NaFlex"
    listing = cli("models", env=env).stdout
    assert "SigLIP 2" in listing and "google/siglip2-base-patch16-naflex" in listing


def test_model_change_is_refused_with_advice(photo_dir: Path, env: dict[str, str], tmp_path: Path) -> None:
    from image_search.testing import build_tiny_clip

    cli("index", str(photo_dir), env=env)
    other = build_tiny_clip(tmp_path / "other-model", seed=7)
    refused = cli("index", str(photo_dir), "--model", str(other), env=env, check=False)
    assert refused.returncode == 1
    assert "--reembed" in refused.stderr and "Traceback" not in refused.stderr
    search = cli("search", "dog", "--model", str(other), env=env, check=False)
    assert search.returncode == 1 and "--reembed" in search.stderr
    redone = json.loads(
        cli("index", str(photo_dir), "--model", str(other), "--reembed", "--json", env=env).stdout
    )
    assert redone["indexed"] + redone["reused"] == len(list(photo_dir.rglob("*.*")))


def test_missing_model_is_a_clear_error_without_traceback(
    photo_dir: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(env, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    env.pop("IMAGE_SEARCH_MODEL")
    proc = cli("index", str(photo_dir), env=env, check=False)
    assert proc.returncode == 1
    assert "not in the Hugging Face cache" in proc.stderr and "--model" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_usage_errors(env: dict[str, str], tmp_path: Path) -> None:
    proc = cli("index", str(tmp_path / "nowhere"), env=env, check=False)
    assert proc.returncode == 1 and "does not exist" in proc.stderr
    proc = cli("index", env=env, check=False)
    assert proc.returncode == 2 and "no picture folders" in proc.stderr  # a usage error, as argparse's
    proc = cli("search", "a dog", "--model", str(tmp_path / "nonexistent" / "dir"), env=env, check=False)
    assert proc.returncode == 1 and f"no model folder at {tmp_path}" in proc.stderr, proc.stderr
    assert "hf download" not in proc.stderr and "Traceback" not in proc.stderr
    # Hostile bytes and places: one line and the documented status, never a traceback.
    bad = os.fsdecode(b"x\xff\xfe")
    for args, code, said in (
        (["album", bad], 2, "not UTF-8"),
        (["install-service", "--output", f"/proc/{bad}"], 1, "cannot write the units"),
        (["benchmark", "--model", f"/nowhere/{bad}"], 1, "no model folder at /nowhere/"),
        (["status", "--config", f"/nowhere/{bad}"], 2, "does not exist"),
    ):
        proc = cli(*args, env=env, check=False)
        assert proc.returncode == code and said in proc.stderr, (args, proc.returncode, proc.stderr[-2000:])
        assert "Traceback" not in proc.stderr, proc.stderr
    proc = cli("status", "--port", "99999", env=env, check=False)
    assert proc.returncode == 2 and "port" in proc.stderr


def test_include_and_exclude(tmp_path: Path, env: dict[str, str]) -> None:
    root = tmp_path / "pics"
    make_photo(root / "keep" / "a.jpg")
    make_photo(root / "raw" / "b.jpg", seed=1)
    make_photo(root / "keep" / "c.png", seed=2)
    out = json.loads(
        cli("index", str(root), "--exclude", "raw", "--include", "*.jpg", "--json", env=env).stdout
    )
    assert out["indexed"] == 1
    shutil.rmtree(root)


def test_duplicates_and_albums_on_the_command_line(
    photo_dir: Path, env: dict[str, str], xdg: Path, tmp_path: Path
) -> None:
    import asyncio

    import numpy as np

    from image_search.search import albums
    from image_search.store import Store, from_bytes, image_key

    meadow = next(photo_dir.rglob("*GreenMeadow.jpg"))
    small = photo_dir / "exports" / "meadow-small.jpg"
    small.parent.mkdir()
    with Image.open(meadow) as image:
        image.resize((image.width // 3, image.height // 3)).save(small, quality=75)
    cli("index", str(photo_dir), env=env)

    smaller = cli("duplicates", "--smaller", env=env).stdout.splitlines()
    assert str(small) in smaller
    groups = json.loads(cli("duplicates", "--json", env=env).stdout)["groups"]
    mine = next(g for g in groups if any(m["path"] == str(small) for m in g))
    assert [m["path"] for m in mine] == [str(meadow), str(small)]
    assert meadow.exists() and small.exists()

    async def save() -> None:
        async with Store(f"surrealkv://{xdg / 'data' / 'image-search' / 'db'}") as store:
            row = await store.get_one(image_key(str(meadow)), embedding=True)
            vector = from_bytes(row["embedding"]).astype(np.float32)
            await albums.save_album(
                store,
                albums.Album(
                    name="Meadow",
                    liked=[image_key(str(meadow))],
                    min_score=0.99,
                    vector=vector,
                    model=row["model"],
                ),
            )

    asyncio.run(save())
    listed = json.loads(cli("albums", "--json", env=env).stdout)
    assert [(a["name"], a["new"]) for a in listed] == [("Meadow", listed[0]["count"])] and listed[0][
        "count"
    ] >= 2
    paths = cli("album", "Meadow", env=env).stdout.splitlines()
    assert {str(meadow), str(small)} <= set(paths)
    links = tmp_path / "links"
    cli("album", "Meadow", "--links", str(links), env=env)
    assert sorted(p.resolve() for p in links.iterdir()) == sorted(Path(p).resolve() for p in paths)
    refused = cli("album", "Meadow", "--links", str(links), env=env, check=False)
    assert refused.returncode == 1 and "not empty" in refused.stderr
    # The folder was indexed by a PATH argument, not configured: still a picture folder (one rule
    # with the web UI, which refuses it too).
    inside = cli("album", "Meadow", "--links", str(photo_dir / "links"), env=env, check=False)
    assert inside.returncode == 1 and "inside the picture folder" in inside.stderr
    assert not (photo_dir / "links").exists()
    assert "no album called" in cli("album", "Nope", env=env, check=False).stderr
    assert json.loads(cli("status", "--json", env=env).stdout)["albums"] == 1


def test_serve_stops_cleanly_on_sigterm_while_the_model_loads(photo_dir: Path, env: dict[str, str]) -> None:
    """`serve` answers on its port before the indexer's model is loaded; a stop request
    (systemd, podman stop, Ctrl-C) in that window is a clean exit 0, not death by signal."""
    import signal

    proc = start_serve([photo_dir], env, free_port())
    assert proc.stderr is not None
    seen = []
    for line in proc.stderr:  # the web server listens; the model load comes next
        seen.append(line)
        if "web UI at" in line:
            break
    proc.send_signal(signal.SIGTERM)
    rest = proc.communicate(timeout=120)[1]
    assert proc.returncode == 0, "".join(seen) + rest
    assert "Traceback" not in rest, rest


def test_paths_print_safely_or_exactly_with_null(tmp_path: Path, env: dict[str, str]) -> None:
    """A file named "orig.jpg\\nz.jpg" printed raw reads as two paths (one naming another file):
    lines escape it; -0 prints its exact bytes, NUL after each path. A name that is not UTF-8
    keeps its bytes too."""

    from .conftest import make_photo

    root = tmp_path / "Pictures"
    original = make_photo(root / "orig.jpg", (400, 300), seed=5)
    tricky = root / "orig.jpg\nz.jpg"
    latin = root / os.fsdecode(b"caf\xe9.jpg")
    with Image.open(original) as image:  # smaller copies: the original is the one to keep
        image.resize((300, 225)).save(tricky, "JPEG")
        image.resize((200, 150)).save(latin)
    cli("index", str(root), env=env)
    lines = cli("duplicates", "--smaller", env=env).stdout.splitlines()
    assert len(lines) == 2 and {str(root / "orig.jpg\\nz.jpg"), str(root / "caf\\xe9.jpg")} == set(lines)
    raw = subprocess.run(
        [sys.executable, "-m", "image_search", "duplicates", "--null"],
        env=env,
        capture_output=True,
        timeout=300,
    ).stdout
    assert raw.endswith(b"\0") and set(raw.split(b"\0")[:-1]) == {os.fsencode(tricky), os.fsencode(latin)}
    found = subprocess.run(
        [sys.executable, "-m", "image_search", "search", "a photo", "-0"],
        env=env,
        capture_output=True,
        timeout=300,
    ).stdout
    assert set(found.split(b"\0")[:-1]) == {os.fsencode(p) for p in (original, tricky, latin)}
    listed = cli("search", "a photo", env=env).stdout
    assert "orig.jpg\\nz.jpg" in listed and len(listed.splitlines()) == 3


def test_log_lines_stay_one_line() -> None:
    import logging

    from image_search.cli.output import OneLine, printable

    assert printable("a\nb\x1b[31m\udce9") == "a\\nb\\x1b[31m\\xe9"
    record = logging.LogRecord(
        "x", logging.INFO, __file__, 1, "skipping %s: %s", ("a.jpg\nFAKE LINE", "bad"), None
    )
    assert OneLine().filter(record) and record.getMessage() == "skipping a.jpg\\nFAKE LINE: bad"
    # A request line that is not UTF-8: aiohttp logs its parser's error with a traceback.
    from aiohttp.http_exceptions import BadStatusLine

    try:
        raise BadStatusLine(b"G\xffT / HTTP/1.1")
    except BadStatusLine:
        import sys

        bad = logging.LogRecord(
            "aiohttp.server",
            logging.ERROR,
            __file__,
            1,
            "Error handling request from %s",
            ("127.0.0.1",),
            sys.exc_info(),
        )
    assert OneLine().filter(bad) and bad.exc_info is None
    line = logging.Formatter().format(bad)
    assert "\n" not in line and line.startswith("Error handling request from 127.0.0.1: ")


def started(
    command: list[str], env: dict[str, str], until: bytes, **popen: object
) -> subprocess.Popen[bytes]:
    """A command started with its log on a pipe, once it has logged ``until`` (read line by line)."""
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **popen)  # type: ignore[call-overload]
    assert proc.stderr is not None
    seen = b""
    while until not in seen:
        line = proc.stderr.readline()
        assert line, seen.decode()
        seen += line
    return proc


def test_no_traceback_for_bad_bytes_a_closed_pipe_or_ctrl_c(tmp_path: Path, env: dict[str, str]) -> None:
    """A query that is not UTF-8 is a usage error (2); output into a reader that stopped ends
    quietly (141, as SIGPIPE would); Ctrl-C reaches the decoding workers too, and none of them
    prints a traceback (130)."""
    import signal

    command = [sys.executable, "-m", "image_search"]
    bad = subprocess.run(
        [*command, "search", os.fsdecode(b"dog\xff")], env=env, capture_output=True, timeout=300
    )
    assert bad.returncode == 2 and b"not UTF-8" in bad.stderr and b"Traceback" not in bad.stderr
    closed = subprocess.Popen([*command, "status"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert closed.stdout is not None and closed.stderr is not None
    closed.stdout.close()  # the reader is gone before a line is written
    errors = closed.stderr.read()
    closed.stderr.close()
    assert closed.wait(timeout=300) == 141 and b"Traceback" not in errors, errors
    root = tmp_path / "Pictures"
    for i in range(1000):
        make_photo(root / f"{i:04d}.jpg", (320, 240), seed=i)
    # A process group of its own, as a terminal's foreground job; "indexing: ": the workers decode.
    running = started([*command, "index", str(root)], env, b"indexing: ", start_new_session=True)
    os.killpg(running.pid, signal.SIGINT)
    _, err = running.communicate(timeout=120)
    assert running.returncode == 130 and b"Traceback" not in err, err.decode()[-3000:]

    # kill -9 on `index` mid-run: its forkserver and decoding workers go too (image_search.lifeline).
    killed = started([*command, "index", str(root), "--force"], env, b"indexing: ")
    assert killed.stderr is not None
    helpers = descendants(killed.pid)
    assert len(helpers) >= 2, helpers  # the forkserver and its workers, at least
    killed.kill()
    killed.wait(timeout=30)
    print(f"\nkill -9: its {len(helpers)} helpers gone {all_gone(helpers):.2f} s later")
    killed.stderr.close()

    # Ctrl-C on `serve` (its daemon's decoding workers and forkserver in the same group): 130.
    serving = started(
        [*command, "serve", str(root), "--port", str(free_port())], env, b"web UI at", start_new_session=True
    )
    os.killpg(serving.pid, signal.SIGINT)
    _, err = serving.communicate(timeout=120)
    assert serving.returncode == 130 and b"Traceback" not in err, err.decode()[-3000:]
