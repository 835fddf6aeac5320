"""Lake benchmarks, side by side in one run: result-table queries vs plain Parquet, astropy FITS(.gz)
and PostgreSQL; one source's spectra vs a per-source FITS file; write rates and peak memory."""

from __future__ import annotations

import gzip
import os
import resource
import shutil
import socket
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from astropy.io import fits

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.lake.healpix import healpix29

BAD_MASK = 0xFE0015F  # ASPCAP flag_bad
Q_COUNT = "SELECT count(*) FROM {t} WHERE NOT flag_bad AND teff BETWEEN 4000 AND 6000"
Q_GROUP = "SELECT b, count(*) FROM {t}, range(0, 28) r(b) WHERE (result_flags >> b) & 1 = 1 GROUP BY b ORDER BY b"


def median_time(fn: Callable[[], object], repeats: int = 5) -> float:
    fn()  # warm
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def aspcap_rows(n: int, seed: int = 0) -> pa.Table:
    """``n`` ASPCAP results with every declared column, on Galactic-plane positions."""
    rng = np.random.default_rng(seed)
    tbl = S.results("aspcap", np.arange(1, n + 1), seed=seed)
    ra, dec = S.sky_positions(n, rng)
    extra = {
        "_healpix_29": pa.array(healpix29(ra, dec)),
        "source_pk": pa.array(np.arange(1, n + 1)),
        "sdss_id": pa.array(np.arange(1, n + 1)),
    }
    for k, v in extra.items():
        tbl = tbl.append_column(k, v)
    return tbl


def _postgres(workdir: Path, csv: Path, columns: list[tuple[str, str]]) -> Callable[[str], float] | None:
    """Start PostgreSQL on loopback (installing Debian's package if needed); load with COPY; return a timer."""
    if shutil.which("initdb") is None and os.geteuid() == 0:
        subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=False, capture_output=True)
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        return None
    bindir = Path(initdb).parent
    data = workdir / "pg"
    user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    if user:
        shutil.chown(data, "postgres")
        shutil.chown(workdir, "postgres")
        os.chmod(csv, 0o644)
    subprocess.run(
        [*user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"], check=True, capture_output=True
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -c shared_buffers=4GB -c max_parallel_workers_per_gather=2 -c work_mem=256MB"
    subprocess.run(
        [*user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(data / "log"), "start"],
        check=True,
        capture_output=True,
    )
    import psycopg

    con = psycopg.connect(f"host=127.0.0.1 port={port} user=postgres", autocommit=True)
    pg_type = {
        "int64": "bigint",
        "int32": "integer",
        "int16": "smallint",
        "float": "real",
        "double": "double precision",
        "bool": "boolean",
        "string": "text",
        "large_string": "text",
    }
    ddl = ", ".join(f'"{n}" {pg_type.get(t, "text")}' for n, t in columns)
    con.execute(f"CREATE TABLE aspcap ({ddl})")
    con.execute(f"COPY aspcap FROM '{csv}' WITH (FORMAT csv, HEADER true)")
    con.execute("CREATE UNIQUE INDEX ON aspcap (spectrum_pk, v_astra)")  # upstream's (spectrum_pk, v_astra_major_minor)
    con.execute("CREATE INDEX ON aspcap (source_pk)")
    con.execute("VACUUM ANALYZE aspcap")
    con.execute("CREATE EXTENSION IF NOT EXISTS pg_prewarm")
    con.execute("SELECT pg_prewarm('aspcap')")

    def timer(sql: str) -> float:
        return median_time(lambda: con.execute(sql).fetchall())

    timer.stop = lambda: subprocess.run(
        [*user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], capture_output=True
    )  # type: ignore[attr-defined]
    return timer


def results_bench(workdir: Path, n: int, with_postgres: bool = True, with_gz: bool = True) -> list[str]:
    tbl = aspcap_rows(n)
    lake = Lake.init(workdir / f"lake_{n}")
    t = time.perf_counter()
    lake.upsert("aspcap", tbl)
    upsert_s = time.perf_counter() - t
    con = lake.connect()
    pq_path = workdir / f"aspcap_{n}.parquet"
    pq.write_table(tbl, pq_path, row_group_size=122_880, compression="zstd")
    plain = duckdb.connect()
    plain_sql = (
        f"SELECT count(*) FROM read_parquet('{pq_path}') WHERE (result_flags & {BAD_MASK}) = 0 AND teff BETWEEN 4000 AND 6000"
    )
    timings: dict[str, dict[str, float]] = {}
    timings["astra-lake (snapshot views + macros)"] = {
        "count": median_time(lambda: con.execute(Q_COUNT.format(t="aspcap")).fetchall()),
        "group": median_time(lambda: con.execute(Q_GROUP.format(t="aspcap")).fetchall()),
    }
    timings["DuckDB on one plain Parquet file, bare bitwise filter"] = {
        "count": median_time(lambda: plain.execute(plain_sql).fetchall()),
        "group": median_time(lambda: plain.execute(Q_GROUP.format(t=f"read_parquet('{pq_path}')")).fetchall()),
    }
    fits_path = workdir / f"aspcap_{n}.fits"
    cols = [
        c
        for c in tbl.column_names
        if pa.types.is_integer(tbl.schema.field(c).type) or pa.types.is_floating(tbl.schema.field(c).type)
    ]
    from astropy.table import Table

    Table({c: tbl.column(c).to_numpy(zero_copy_only=False) for c in cols}).write(fits_path, overwrite=True)

    def astropy_query(path: Path) -> tuple[int, np.ndarray]:
        with fits.open(path, memmap=not str(path).endswith(".gz")) as h:
            d = h[1].data
            teff, flags = d["teff"], d["result_flags"]
            count = int(np.count_nonzero(((flags & BAD_MASK) == 0) & (teff >= 4000) & (teff <= 6000)))
            hist = np.array([np.count_nonzero((flags >> b) & 1) for b in range(28)])
        return count, hist

    timings["astropy on uncompressed FITS (memmap) + numpy"] = {
        "count": median_time(lambda: astropy_query(fits_path)),
        "group": float("nan"),
    }
    if with_gz:
        gz = workdir / f"aspcap_{n}.fits.gz"
        with open(fits_path, "rb") as src, gzip.open(gz, "wb", compresslevel=6) as dst:
            shutil.copyfileobj(src, dst, 1 << 24)
        timings["astropy on FITS.gz (as releases ship) + numpy"] = {
            "count": median_time(lambda: astropy_query(gz), 1),
            "group": float("nan"),
        }
    if with_postgres:
        csv = workdir / f"aspcap_{n}.csv"
        import pyarrow.csv as pacsv

        pacsv.write_csv(tbl.select(cols), csv)
        timer = _postgres(workdir, csv, [(c, str(tbl.schema.field(c).type)) for c in cols])
        if timer is not None:
            pg_count = f"SELECT count(*) FROM aspcap WHERE (result_flags & {BAD_MASK}) = 0 AND teff BETWEEN 4000 AND 6000"
            pg_group = "SELECT b, count(*) FROM aspcap, generate_series(0, 27) b WHERE (result_flags >> b) & 1 = 1 GROUP BY b"
            timings["PostgreSQL 15 (warm, parallel workers, shared_buffers 4GB)"] = {
                "count": timer(pg_count),
                "group": timer(pg_group),
            }
            timer.stop()  # type: ignore[attr-defined]
    lake_t = timings["astra-lake (snapshot views + macros)"]
    lines = [
        f"### Result table: {n:,} ASPCAP rows x {len(tbl.column_names)} columns",
        "",
        "| engine | count(*) NOT flag_bad AND teff range | flag-count group-by | astra-lake faster by |",
        "|---|---:|---:|---:|",
    ]
    for name, t in timings.items():
        ratio = "1.00x (reference)" if t is lake_t else f"{t['count'] / lake_t['count']:.2f}x"
        lines.append(f"| {name} | {t['count'] * 1e3:.1f} ms | {t['group'] * 1e3:.1f} ms | {ratio} |")
    touched = n * (4 + 8)
    lines += [
        "",
        f"Bytes the count query must touch: {touched / 1e6:.0f} MB (teff float32 + result_flags int64); at 10 GB/s "
        f"that is {touched / 10e9 * 1e3:.1f} ms; astra-lake took {lake_t['count'] * 1e3:.1f} ms "
        f"(it must also decompress zstd Parquet).",
        f"Upsert of {n:,} results into an empty table: {n / upsert_s:,.0f} rows/s; "
        f"peak RSS of this process so far {peak_rss_mb():,.0f} MB.",
    ]
    return lines


def spectra_bench(workdir: Path, n_spectra: int) -> list[str]:
    lake = Lake.init(workdir / f"spectra_{n_spectra}")
    src = S.sources(n_spectra, seed=5)
    lake.write("source", src)
    ids = src.column("sdss_id").to_numpy()
    t = time.perf_counter()
    for batch in S.spectra("apogee_star", ids, seed=6, batch=2000):
        lake.write("apogee_star", batch)
    append_s = time.perf_counter() - t
    rng = np.random.default_rng(1)
    sample = rng.choice(ids, 200, replace=False)
    lake.spectra(int(sample[0]), "apogee_star")
    lat = []
    for sid in sample:
        s = time.perf_counter()
        lake.spectra(int(sid), "apogee_star")
        lat.append(time.perf_counter() - s)
    # the per-source FITS path: a 4-HDU mwmStar-like file, one row of flux/ivar/flags
    one = lake.spectra(int(sample[0]), "apogee_star")
    hdus = [fits.PrimaryHDU()] + [
        fits.BinTableHDU.from_columns(
            [
                fits.Column("flux", f"{8575}E", array=one.flux),
                fits.Column("ivar", "8575E", array=one.ivar),
                fits.Column("pixel_flags", "8575J", array=one.pixel_flags),
            ],
            name=n,
        )
        for n in ("BOSS/APO", "BOSS/LCO", "APOGEE/APO", "APOGEE/LCO")
    ]
    fpath = workdir / "mwmStar-like.fits"
    fits.HDUList(hdus).writeto(fpath, overwrite=True)

    def fits_read() -> None:
        with fits.open(fpath) as h:
            d = h[3].data
            _ = (np.array(d["flux"][0]), np.array(d["ivar"][0]), np.array(d["pixel_flags"][0]))

    fits_t = median_time(fits_read, 50)
    snap = lake.snapshot()
    paths = snap.paths("apogee_star")
    import pyarrow.dataset as pads

    t = time.perf_counter()
    total = pads.dataset(paths, format="parquet").to_table(columns=["flux"]).num_rows
    scan_s = time.perf_counter() - t
    raw_gb = total * 8575 * 4 / 1e9
    lines = [
        f"### Spectra: {n_spectra:,} APOGEE spectra (8575 px), "
        f"row groups of {lake.catalog.schema.table('apogee_star').row_group_rows}",
        "",
        "| what | figure |",
        "|---|---:|",
        f"| one source's spectra via lake.spectra(sdss_id): median | {statistics.median(lat) * 1e3:.1f} ms |",
        f"| same: p99 | {np.percentile(lat, 99) * 1e3:.1f} ms |",
        f"| astropy: open a 4-HDU mwmStar-like file, read one row (cached) | {fits_t * 1e3:.1f} ms |",
        f"| full scan of flux (pyarrow dataset, 2 threads, decode) | {raw_gb / scan_s:.2f} GB/s raw float32 |",
        f"| append {n_spectra:,} spectra (synthetic generation included) | {n_spectra / append_s:,.0f} spectra/s |",
        f"| peak RSS of this process | {peak_rss_mb():,.0f} MB |",
    ]
    lines += _row_group_tradeoff(workdir, paths, sample, lake)
    return lines


def _row_group_tradeoff(workdir: Path, paths: list[str], sample: np.ndarray, lake: Lake) -> list[str]:
    """Lookup latency and scan speed for the same files rewritten with other row-group sizes
    (files pruned by their _healpix_29 range, row groups by their statistics, as the lake does)."""
    import pyarrow.dataset as pads

    from astra_lake.query.spectra import SourceIndex, _row_groups

    index = SourceIndex(lake.snapshot())
    entries = lake.snapshot().files("apogee_star")
    out = ["", "| row group (spectra) | lookup median | lookup p99 | flux scan GB/s (threads) |", "|---:|---:|---:|---:|"]
    for rg in (64, 256, 1024):
        files = []
        for i, (p, f) in enumerate(zip(paths, entries, strict=True)):
            dst = workdir / f"rg{rg}_{i}.parquet"
            pq.write_table(pq.read_table(p), dst, row_group_size=rg, compression="zstd", compression_level=3)
            files.append((f.hmin, f.hmax, pq.ParquetFile(dst, memory_map=True), dst))
        lat = []
        for sid in sample[:100]:
            h = index.healpix_of(int(sid))
            s = time.perf_counter()
            for lo, hi, pf, _ in files:
                if lo is not None and not lo <= h <= hi:
                    continue
                groups = _row_groups(pf, np.array([[h, h + 1]], dtype=np.int64))
                if groups:
                    pf.read_row_groups(groups)
            lat.append(time.perf_counter() - s)
        t = time.perf_counter()
        n = pads.dataset([str(f[3]) for f in files], format="parquet").to_table(columns=["flux"]).num_rows
        gbs = n * 8575 * 4 / 1e9 / (time.perf_counter() - t)
        out.append(f"| {rg} | {statistics.median(lat) * 1e3:.1f} ms | {np.percentile(lat, 99) * 1e3:.1f} ms | {gbs:.2f} |")
    return out
