"""`image-search doctor` (#16, item 4): one line per check, a fix where something is wrong, exit
status 1 on a failure, and nothing changed."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

from image_search import doctor


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "image_search", "doctor", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_working_setup_passes(cli_env: dict[str, str], photo_dir: Path, xdg: Path) -> None:
    proc = run(str(photo_dir), env=cli_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = {line.split()[1]: line for line in proc.stdout.splitlines() if not line.startswith(" ")}
    assert lines["device"].startswith("ok") and "cpu" in lines["device"]
    assert lines["model"].startswith("ok") and "sha256:" in lines["model"]
    assert lines["database"].startswith("ok") and ", new," in lines["database"]
    assert lines["inotify"].startswith("ok") and "3 folders to watch" in lines["inotify"]
    assert lines["port"].startswith("ok") and "free" in lines["port"]
    assert not (xdg / "data" / "image-search" / "db").exists()  # it only looks

    subprocess.run([sys.executable, "-m", "image_search", "index", str(photo_dir)], env=cli_env, check=True)
    checks = {c["name"]: c for c in json.loads(run("--json", env=cli_env).stdout)}
    from image_search.store import SCHEMA_VERSION

    assert checks["database"]["level"] == "ok" and f"schema {SCHEMA_VERSION}" in checks["database"]["what"]


def test_problems_fail_with_their_fix(cli_env: dict[str, str], tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        proc = run("--model", str(tmp_path / "no-model"), "--port", str(port), env=cli_env)
    assert proc.returncode == 1
    out = proc.stdout
    assert f"FAIL  model     no model folder at {tmp_path / 'no-model'}" in out, out
    assert f"FAIL  port      127.0.0.1:{port}: Address already in use" in out
    assert out.count("fix: ") >= 2 and "Traceback" not in proc.stderr


def test_the_inotify_limit_against_the_folders(tmp_path: Path) -> None:
    for i in range(5):
        (tmp_path / f"a{i}" / "b").mkdir(parents=True)
    assert doctor.count_folders([tmp_path]) == 11
    assert doctor.inotify([tmp_path], limit=100).level == "ok"
    low = doctor.inotify([tmp_path], limit=10)
    assert low.level == "FAIL" and "11 folders to watch, the limit is 10" in low.what
    assert "fs.inotify.max_user_watches=" in low.fix and "sysctl" in low.fix
    assert doctor.count_folders([tmp_path], most=4) == 4  # a huge tree is not walked to the end


def test_the_service_unit(tmp_path: Path) -> None:
    assert doctor.service(tmp_path).level == "note"
    unit = tmp_path / ".config" / "systemd" / "user" / "image-search.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Unit]\n")
    assert doctor.service(tmp_path).level == "ok"
