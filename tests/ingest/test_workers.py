"""Reader worker processes end when the ingest process is killed (SIGKILL leaves no orphans)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.ingest.conftest import APSTAR

PROC = Path("/proc")


def _children(pid: int) -> set[int]:
    out = set()
    for entry in PROC.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.add(int(entry.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not PROC.is_dir() or sys.platform != "linux", reason="reads /proc")
def test_reader_workers_end_when_the_ingest_process_is_killed(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(200):  # enough files that the run is still reading when it is killed (hard links: no disk)
        try:
            os.link(APSTAR, folder / f"{i:04d}-{APSTAR.name}")
        except OSError:
            shutil.copy(APSTAR, folder / f"{i:04d}-{APSTAR.name}")
    script = (
        "import sys; from astra_lake import Lake; from astra_lake.ingest.runner import Ingestor, find_files; "
        "Ingestor(Lake.init(sys.argv[1]).catalog, workers=2, batch_files=1000).run(find_files([sys.argv[2]]))"
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=os.environ.get("NUMBA_CACHE_DIR", str(tmp_path / "numba")))
    parent = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "lk"), str(folder)], env=env)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while len(workers) < 2 and time.monotonic() < deadline and parent.poll() is None:
            workers = _children(parent.pid)
            time.sleep(0.2)
        assert len(workers) >= 2, "the workers never started"
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.monotonic() + 15
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "reader workers outlived the killed ingest"
    finally:
        if parent.poll() is None:
            parent.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)
