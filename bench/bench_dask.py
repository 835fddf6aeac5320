"""Scaling on dask.distributed: ``lake.run`` (The Payne over emulated APOGEE spectra) and ``ingest``
(copies of the real apStar / apVisit / BOSS spec fixtures), serial (one thread) against a
``LocalCluster`` of 1 and 2 worker processes (one thread each); the coordinator commits in every case.
Clusters are started and warmed (imports, model load, numba compilation) before timing, so the figures
are the run itself; each configuration redoes every spectrum (``force``).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from astra_lake import Lake

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "tests" / "data" / "payne" / "NN_normalized_spectra.npz"


def _lake(path: Path, n: int) -> Lake:
    from astra_lake.ingest import synthetic as S
    from astra_lake.pipelines.emulated import apogee_star_rows
    from astra_lake.pipelines.the_payne import ThePayne

    lake = Lake.init(path)
    src = S.sources(n, seed=31)
    lake.write("source", src)
    payne = ThePayne.load(MODEL)
    labels = payne.emulator.unscale(np.random.default_rng(32).uniform(-0.3, 0.3, (n, 5)))
    lake.write("apogee_star", apogee_star_rows(payne, src.column("sdss_id").to_numpy(), labels, snr=100.0, seed=33))
    return lake


def cluster(workers: int) -> tuple[Any, Any]:
    import distributed

    c = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0")
    return c, distributed.Client(c)


def ingest(work: Path, n_files: int = 120) -> list[str]:
    """Markdown rows: files/s of ingest serially and on 1 and 2 Dask workers, and the ratio to 1 worker."""
    from bench_ingest import replicate

    from astra_lake.ingest.runner import Ingestor, find_files

    replicate(work / "dask-files", n_files)
    files = find_files([work / "dask-files"])
    times: dict[str, float] = {}
    for workers in (0, 1, 2):
        lake = Lake.init(work / f"dask-ingest-{workers}")
        name = "serial (this process)" if not workers else f"Dask LocalCluster, {workers} worker{'s' * (workers > 1)}"
        if workers:
            c, client = cluster(workers)
            client.run(lambda: __import__("astra_lake.ingest.runner"))  # warm: imports
        t0 = time.perf_counter()
        summary = Ingestor(lake.catalog, client=client if workers else None).run(files)
        times[name] = time.perf_counter() - t0
        assert summary.failed == 0, summary.errors[:3]
        if workers:
            client.close()
            c.close()
    base = times["Dask LocalCluster, 1 worker"]
    rows = ["", f"Ingest of {n_files} files (apStar, apVisit, BOSS spec copies):", ""]
    rows += ["| configuration | time | files/s | speed-up vs 1 Dask worker |", "|---|---:|---:|---:|"]
    rows += [f"| {k} | {v:.1f} s | {n_files / v:.1f} | {base / v:.2f}x |" for k, v in times.items()]
    return rows


def run(work: Path, n: int = 256, batch_rows: int = 64) -> list[str]:
    """Markdown rows: spectra/s serial, on 1 and 2 Dask workers, and the 2-worker / 1-worker ratio."""

    lake = _lake(work / "dask-lake", n)
    times: dict[str, float] = {}

    def timed(name: str, **kw: object) -> None:
        t0 = time.perf_counter()
        summary = lake.run("the_payne", model=str(MODEL), force=True, workers=1, batch_rows=batch_rows, **kw)
        times[name] = time.perf_counter() - t0
        assert summary.done == n, summary.message

    warm = "spectrum_pk IN (SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk LIMIT 16)"  # 8 blocks: each worker gets some
    lake.run("the_payne", model=str(MODEL), force=True, workers=1, where=warm, batch_rows=2)
    timed("serial (this process, 1 thread)")
    for workers in (1, 2):
        t0 = time.perf_counter()
        c, client = cluster(workers)
        with c, client:
            started = time.perf_counter() - t0
            lake.run("the_payne", model=str(MODEL), force=True, workers=1, where=warm, batch_rows=2, client=client)
            timed(f"Dask LocalCluster, {workers} worker{'s' * (workers > 1)}", client=client)
        times[f"start {workers}"] = started
    names = [k for k in times if not k.startswith("start")]
    base = times[names[1]]
    rows = [
        f"The Payne on {n} emulated APOGEE spectra, batches of {batch_rows}; load average {os.getloadavg()[0]:.1f} "
        f"on {os.cpu_count()} cores; LocalCluster start: {times['start 1']:.1f} s (1 worker), "
        f"{times['start 2']:.1f} s (2 workers).",
        "",
        "| configuration | run time | spectra/s | speed-up vs 1 Dask worker |",
        "|---|---:|---:|---:|",
    ]
    rows += [f"| {k} | {times[k]:.1f} s | {n / times[k]:.1f} | {base / times[k]:.2f}x |" for k in names]
    return rows + ingest(work, 3 * max(n // 16, 8))


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print("\n".join(run(Path(tmp))))
