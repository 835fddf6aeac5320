"""Ingest rate vs the cost of only reading the same files with astropy, side by side in one run."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from astropy.io import fits

from astra_lake import Lake
from astra_lake.ingest.runner import Ingestor, find_files

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "data" / "fixtures"


def replicate(dst: Path, n_files: int) -> list[Path]:
    """Copies of the real fixtures with distinct identities (object id / fiber changed in the header)."""
    dst.mkdir(parents=True, exist_ok=True)
    sources = sorted(FIXTURES.glob("*.fits"))
    out = []
    for i in range(n_files):
        src = sources[i % len(sources)]
        path = dst / f"{i:05d}-{src.name}"
        shutil.copy(src, path)
        path.chmod(0o644)
        with fits.open(path, mode="update") as h:
            hdr = h[0].header
            if "OBJID" in hdr:
                hdr["OBJID"] = f"2M{i:08d}+0000000"
            if "FIBERID" in hdr:
                hdr["FIBERID"] = 1 + i % 999
                hdr["MJD5" if "MJD5" in hdr else "MJD"] = 55000 + i // 999
            if "SPALL" in h:
                h["SPALL"].data["FIBERID"][0] = 1 + i % 999
                h["SPALL"].data["MJD"][0] = 55000 + i // 999
        out.append(path)
    return out


def bare_read(paths: list[Path]) -> float:
    t = time.perf_counter()
    for p in paths:
        with fits.open(p, memmap=False) as h:
            for hdu in h:
                _ = hdu.data
    return time.perf_counter() - t


def run(workdir: Path, n_files: int = 2000) -> list[str]:
    files = replicate(workdir / "files", n_files)
    mb = sum(p.stat().st_size for p in files) / 1e6
    bare = bare_read(files)
    lines = [
        f"### Ingest: {n_files:,} files ({mb:,.0f} MB: apStar, apVisit, BOSS spec copies)",
        "",
        "| path | files/s | MB/s | cost vs bare astropy read |",
        "|---|---:|---:|---:|",
        f"| astropy: open + read every HDU, nothing else | {n_files / bare:,.1f} | {mb / bare:,.1f} | 1.00x |",
    ]
    for workers in (1, 2):
        lake = Lake.init(workdir / f"lake_w{workers}")
        t = time.perf_counter()
        summary = Ingestor(lake.catalog, workers=workers).run(find_files([workdir / "files"]))
        s = time.perf_counter() - t
        assert summary.failed == 0, summary.errors[:3]
        lines.append(f"| astra-lake ingest --workers {workers} | {n_files / s:,.1f} | {mb / s:,.1f} | {s / bare:.2f}x |")
    return lines
