"""Fixtures of the fault suite.

Child processes are forked from a forkserver that has imported astra-lake once (an import takes seconds;
a fork milliseconds). Mount-based faults (a full disk, a read-only file system) need ``mount``: root or
CAP_SYS_ADMIN; without it those tests are skipped with the reason.
"""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from multiprocessing import forkserver
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))  # faultkit and fault_workers (also for the forkserver's children)

from faultkit import mount  # noqa: E402


@pytest.fixture(scope="session")
def procs() -> multiprocessing.context.ForkServerContext:
    """A process context whose children start without re-importing astra-lake."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["fault_workers"])
    # The server must find fault_workers to preload it (Python 3.11 ignores the sys.path it is sent).
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), *([old] if old else [])])
    try:
        forkserver.ensure_running()
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old
    return ctx


@pytest.fixture(scope="session")
def can_mount(tmp_path_factory: pytest.TempPathFactory) -> None:
    probe = tmp_path_factory.mktemp("mount-probe")
    try:
        mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe))
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"mounting is not permitted here ({str(exc).splitlines()[0]}): no tmpfs / read-only mounts")
    subprocess.run(["umount", str(probe)], check=True)
