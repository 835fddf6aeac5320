"""Start-up latency of the command line and of ``import astra_lake`` (issue 12 §2), against the targets and
against a bare ``python -c pass`` measured in the same run: median of 10 runs after one warm-up."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
RUNS = 10
COUNT = "SELECT count(*) FROM aspcap"


def _median_seconds(argv: list[str], env: dict[str, str]) -> float:
    subprocess.run(argv, env=env, check=True, capture_output=True)  # warm-up: disk cache, numba/schema caches
    times = []
    for _ in range(RUNS):
        t = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


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
        f"### Command-line latency (median of {RUNS} runs, warm caches)",
        "",
        "| command | median | target | met |",
        "|---|---:|---:|:-:|",
    ]
    for label, argv, target in cases:
        seconds = _median_seconds(argv, env)
        verdict = "" if target is None else ("yes" if seconds <= target else "no")
        lines.append(f"| {label} | {seconds:.3f} s | {'' if target is None else f'{target:.1f} s'} | {verdict} |")
    return lines
