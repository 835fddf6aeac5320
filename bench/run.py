"""Run the benchmarks and print markdown tables of ratios against the peers named in the issues.

    python bench/run.py                 # everything at the issues' sizes (slow: tens of minutes)
    python bench/run.py --quick         # small sizes, a few minutes
    python bench/run.py kernels lake    # a subset (cli kernels lake spectra scan writes release ingest pipelines import nn dask)
    python bench/run.py cli             # start-up latency of the CLI and of import astra_lake
    python bench/run.py release         # release export (astraAllStarASPCAP FITS) against astropy
    python bench/run.py import          # import-postgres vs COPY ... TO (1 M ASPCAP rows)
    python bench/run.py dask            # lake.run on 1 and 2 dask.distributed workers, as a ratio
    python bench/run.py rehearsal --scale 0.25,1   # survey-scale rehearsal (opt-in; hours at full size)

Timings are medians of repeated runs on a shared machine: compare ratios within one run, not runs.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_cli
import bench_dask
import bench_import
import bench_ingest
import bench_kernels
import bench_lake
import bench_nn
import bench_pipelines
import bench_rehearsal
import bench_release
import bench_scan


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="*", default=["cli", "kernels", "lake", "spectra", "scan", "writes", "ingest"])
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument("--rows", type=int, default=None, help="result rows (default 2,000,000; quick 200,000)")
    ap.add_argument("--spectra", type=int, default=None, help="spectra in the lookup lake (default 50,000; quick 5,000)")
    ap.add_argument("--files", type=int, default=None, help="files to ingest (default 2,000; quick 150)")
    ap.add_argument("--summary-rows", default=None, help="rows of the summary-ingest files (default 100000,1000000; quick 20000)")
    ap.add_argument("--no-postgres", action="store_true")
    ap.add_argument("--lake", type=Path, default=None, help="demo lake for the cli rows (default: build one)")
    ap.add_argument("--scale", default="0.25,1", help="rehearsal sizes, fractions of 10 M results + 200 k spectra")
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "latest.md")
    args = ap.parse_args()
    rows = args.rows or (200_000 if args.quick else 2_000_000)
    n_spectra = args.spectra or (5_000 if args.quick else 50_000)
    n_files = args.files or (150 if args.quick else 2_000)
    work = Path(tempfile.mkdtemp(prefix="astra-lake-bench-"))
    out = [
        f"# astra-lake benchmarks ({time.strftime('%Y-%m-%d %H:%M')}, {platform.machine()}, Python {platform.python_version()})",
        "",
    ]
    try:
        if "cli" in args.what:
            out += ["## Command line", "", *bench_cli.run(work, args.lake), ""]
        if "kernels" in args.what:
            out += ["## Kernels (APOGEE 8575 px, float32 in)", "", *bench_kernels.run(500 if args.quick else 2000), ""]
        if "lake" in args.what:
            out += ["## Queries", ""]
            out += [*bench_lake.results_bench(work, rows // 4, with_postgres=False, with_gz=False), ""]
            out += [*bench_lake.results_bench(work, rows, with_postgres=not args.no_postgres), ""]
        if "spectra" in args.what:
            out += ["## Spectra", "", *bench_lake.spectra_bench(work, n_spectra), ""]
        if "scan" in args.what:
            out += ["## Full scans and lookups near the hardware limit", "", *bench_scan.run(work, n_spectra), ""]
        if "writes" in args.what:
            n_results = 250_000 if args.quick else 1_000_000
            out += ["## Streaming writes", "", *bench_lake.streaming_bench(work, n_results, n_spectra), ""]
        if "release" in args.what:
            out += ["## Release export", "", *bench_release.run(work, 100_000 if args.quick else 1_000_000), ""]
        if "ingest" in args.what:
            sizes = [int(x) for x in (args.summary_rows or ("20000" if args.quick else "100000,1000000")).split(",")]
            out += ["## Ingest", "", *bench_ingest.run(work, n_files), ""]
            out += [*bench_ingest.summary_bench(work, sizes), ""]
            out += [*bench_ingest.drp_bench(work, [100_000 if args.quick else 250_000]), ""]
        if "pipelines" in args.what:
            out += ["## Pipelines", "", *bench_pipelines.run(args.quick), ""]
        if "import" in args.what and not args.no_postgres:
            out += ["## Import from PostgreSQL", "", *bench_import.run(work, 100_000 if args.quick else 1_000_000), ""]
        if "rehearsal" in args.what:  # never by default: tens of GB and hours at full size
            scales = [float(x) for x in args.scale.split(",")]
            out += ["## Survey-scale rehearsal", "", *bench_rehearsal.run(work, scales), ""]
        if "nn" in args.what:
            out += ["## Neural networks and template fits", "", *bench_nn.run(64 if args.quick else 256), ""]
        if "dask" in args.what:
            out += ["## Dask: scaling from 1 to 2 workers", "", *bench_dask.run(work, 128 if args.quick else 256), ""]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(out)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
