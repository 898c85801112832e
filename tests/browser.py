"""Open a page in Debian's headless chromium: its DOM, a screenshot and the console's complaints."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--enable-logging=stderr", "--v=0", "--window-size=1000,1400"]


def chromium() -> str:
    """The chromium executable; skipped where it is missing, except in CI (.ci/run installs it)."""
    exe = shutil.which("chromium") or shutil.which("/usr/bin/chromium")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is missing in CI: .ci/run installs Debian's chromium before make test")
        pytest.skip("chromium not installed (apt-get install chromium); CI runs this check")
    return exe


def render(page: Path, tmp_path: Path) -> tuple[str, Path]:
    """``(the DOM as chromium parsed it, a 1000×1400 screenshot)``; fails on any console error,
    uncaught exception or refused resource."""
    exe, url = chromium(), page.as_uri()
    dom = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'p1'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    shot = tmp_path / "shot.png"
    run = subprocess.run([exe, *FLAGS, f"--user-data-dir={tmp_path / 'p2'}", f"--screenshot={shot}", url],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    for out in (dom.stderr, run.stderr):
        bad = [x for x in out.splitlines() if "Uncaught" in x or ("CONSOLE" in x and page.name in x)
               or "Refused to" in x]
        assert not bad, bad
    return dom.stdout, shot
