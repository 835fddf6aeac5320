"""Start-up latency of the command line and of ``import astra_lake`` (issue 12 §2), against the targets and
against a bare ``python -c pass`` measured in the same run: median of 10 runs after one warm-up. The CPU time
(user + system) of each run is printed too: on a shared machine it moves much less than the wall time."""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNS = 10
COUNT = "SELECT count(*) FROM aspcap"


def _median_seconds(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Median wall and CPU (user + system, the child's) seconds of ``argv``."""
    subprocess.run(argv, env=env, check=True, capture_output=True)  # warm-up: disk cache, numba/schema caches
    wall, cpu = [], []
    for _ in range(RUNS):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        wall.append(time.perf_counter() - t)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(wall), statistics.median(cpu)


def demo_lake(workdir: Path) -> Path:
    """The demo lake (``astra-lake demo``, 2,000 synthetic sources plus the real fixtures)."""
    path = workdir / "demo-lake"
    if not (path / "lake.json").exists():
        subprocess.run([str(BIN / "astra-lake"), "--quiet", "demo", "--path", str(path)], check=True, capture_output=True)
    return path


def run(workdir: Path, lake: Path | None = None) -> list[str]:
    lake = lake or demo_lake(workdir)
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(BIN.parent / "numba-cache"))}
    cli = str(BIN / "astra-lake")
    cases = [
        ("`python -c pass` (interpreter start, for reference)", [sys.executable, "-c", "pass"], None),
        ("`python -c 'import astra_lake'`", [sys.executable, "-c", "import astra_lake"], 0.3),
        ("`astra-lake --help`", [cli, "--help"], 0.3),
        ("`astra-lake flags aspcap 67108896`", [cli, "flags", "aspcap", "67108896"], 0.3),
        ('`astra-lake sql "SELECT count(*) FROM aspcap"` (demo lake)', [cli, "sql", COUNT, "--lake", str(lake)], 0.8),
    ]
    lines = [
        f"### Command-line latency (median of {RUNS} runs, warm caches; load average {os.getloadavg()[0]:.1f})",
        "",
        "| command | median | CPU (user + sys) | target | met |",
        "|---|---:|---:|---:|:-:|",
    ]
    for label, argv, target in cases:
        seconds, cpu = _median_seconds(argv, env)
        verdict = "" if target is None else ("yes" if seconds <= target else "no")
        goal = "" if target is None else f"{target:.1f} s"
        lines.append(f"| {label} | {seconds:.3f} s | {cpu:.3f} s | {goal} | {verdict} |")
    return lines
