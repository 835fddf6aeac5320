"""Ingest rate vs the cost of only reading the same files with astropy, side by side in one run: many
per-spectrum files, and one summary file at survey scale."""

from __future__ import annotations

import importlib.util
import shutil
import statistics
import time
from pathlib import Path
from typing import Any

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


# -- summary files at survey scale ------------------------------------------------------------------
def _factory() -> Any:
    spec = importlib.util.spec_from_file_location("fits_factory", FIXTURES.parent / "fits_factory.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def astropy_read(path: str) -> dict[str, float]:
    """astropy's own ``Table.read`` of the APOGEE HDU (what a user would do), in a fresh process."""
    from astropy.table import Table
    from bench_lake import own_peak_mb

    rest = own_peak_mb()
    t = time.perf_counter()
    table = Table.read(path, hdu=2)
    seconds = time.perf_counter() - t
    assert len(table) > 0
    return {"seconds": seconds, "peak_mb": own_peak_mb(), "rest_mb": rest}


def summary_ingest(path: str, lake_path: str) -> dict[str, float]:
    """``astra-lake ingest`` of one summary file into a new lake, in a fresh process."""
    from bench_lake import own_peak_mb

    lake = Lake.init(lake_path)
    rest = own_peak_mb()
    t = time.perf_counter()
    summary = Ingestor(lake.catalog).run([path])
    seconds = time.perf_counter() - t
    assert summary.failed == 0, summary.errors
    return {"seconds": seconds, "peak_mb": own_peak_mb(), "rest_mb": rest, "rows": float(sum(summary.rows.values()))}


def summary_bench(workdir: Path, sizes: list[int], repeats: int = 2) -> list[str]:
    """Ingest of an astraAllStarASPCAP-format file (built from the datamodel columns, distinct rows) vs
    astropy's ``Table.read`` of it, alternating in fresh processes; medians."""
    from bench_lake import in_child

    lines = [
        "### Summary file ingest: astraAllStarASPCAP format (396 APOGEE columns from the DR19 datamodel)",
        "",
        "| rows | file | astropy `Table.read` | astra-lake ingest | ratio | ingest peak memory above idle | vs file size |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        path = workdir / f"astraAllStarASPCAP-{n}.fits"
        _factory().make_streamed("astraAllStarASPCAP", path, {2: n}, seed=1)
        mb = path.stat().st_size / 1e6
        reads, ingests = [], []
        for i in range(repeats):
            reads.append(in_child(astropy_read, str(path)))
            lake = workdir / f"lake-summary-{n}-{i}"
            ingests.append(in_child(summary_ingest, str(path), str(lake)))
            shutil.rmtree(lake, ignore_errors=True)
        read = statistics.median(r["seconds"] for r in reads)
        ingest = statistics.median(r["seconds"] for r in ingests)
        peak = max(r["peak_mb"] - r["rest_mb"] for r in ingests)
        total = max(r["peak_mb"] for r in ingests)
        lines.append(
            f"| {n:,} | {mb:,.0f} MB | {read:.1f} s | {ingest:.1f} s ({n / ingest:,.0f} rows/s) | {ingest / read:.2f}x "
            f"| {peak:,.0f} MB ({total:,.0f} MB in all) | {peak / mb:.2f}x |"
        )
        path.unlink()
    return lines


# -- reduction-pipeline summaries (spAll) ----------------------------------------------------------
def spall_read(path: str) -> dict[str, float]:
    """astropy's ``Table.read`` of the spAll table, in a fresh process."""
    from astropy.table import Table

    t = time.perf_counter()
    table = Table.read(path, hdu=1)
    seconds = time.perf_counter() - t
    assert len(table) > 0
    return {"seconds": seconds}


def spall_ingest(path: str, lake_path: str) -> dict[str, float]:
    """``astra-lake ingest`` of one spAll file (into a new lake, or one that already holds its rows)."""
    from bench_lake import own_peak_mb

    lake = Lake(lake_path) if (Path(lake_path) / "lake.json").exists() else Lake.init(lake_path)
    rest = own_peak_mb()
    t = time.perf_counter()
    summary = Ingestor(lake.catalog).run([path])
    seconds = time.perf_counter() - t
    assert summary.failed == 0, summary.errors
    return {"seconds": seconds, "peak_mb": own_peak_mb(), "rest_mb": rest}


def drp_bench(workdir: Path, sizes: list[int]) -> list[str]:
    """Ingest of an spAll-format file (DR20 datamodel layout, 147 columns, distinct rows) vs astropy's
    ``Table.read`` of it: into an empty lake (every row inserts a source and a boss_visit spectrum), then
    a copy of it again (every row updates the stored source and spectrum). Fresh processes, one run each."""
    from bench_lake import in_child

    lines = [
        "### DRP summary ingest: spAll format (147 columns of the DR20 datamodel)",
        "",
        "| rows | file | astropy `Table.read` | ingest, all new | ratio | ingest again, all updates | ratio "
        "| peak memory above idle |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in sizes:
        path = workdir / f"spAll-{n}.fits"
        _factory().make_drp_streamed("spAll", path, n, seed=1)
        mb = path.stat().st_size / 1e6
        read = in_child(spall_read, str(path))["seconds"]
        lake = workdir / f"lake-spall-{n}"
        first = in_child(spall_ingest, str(path), str(lake))
        again = workdir / "again"
        again.mkdir(exist_ok=True)
        copy = again / path.name
        shutil.copy(path, copy)
        second = in_child(spall_ingest, str(copy), str(lake))
        peak = max(r["peak_mb"] - r["rest_mb"] for r in (first, second))
        a, b = first["seconds"], second["seconds"]
        lines.append(
            f"| {n:,} | {mb:,.0f} MB | {read:.1f} s | {a:.1f} s ({n / a:,.0f} rows/s) | {a / read:.2f}x "
            f"| {b:.1f} s ({n / b:,.0f} rows/s) | {b / read:.2f}x | {peak:,.0f} MB |"
        )
        shutil.rmtree(lake, ignore_errors=True)
        path.unlink()
        copy.unlink()
    return lines
