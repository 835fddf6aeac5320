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
from collections.abc import Callable, Iterator
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


def interleaved(fns: dict[str, Callable[[], object]], repeats: int = 15) -> dict[str, float]:
    """Median seconds of each function, run in turns so that machine noise hits all of them alike."""
    for fn in fns.values():
        fn()  # warm
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def in_child(fn: Callable[..., dict[str, float]], *args: object) -> dict[str, float]:
    """Run ``fn(*args)`` in a fresh process (so its peak RSS is its own) and return its dict."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def streaming_upsert(path: str, n: int, batch: int = 100_000) -> dict[str, float]:
    """Upsert ``n`` ASPCAP results generated batch by batch (never all in memory); rows/s and peak RSS."""
    lake = Lake.init(path)

    def batches() -> Iterator[pa.Table]:
        for start in range(0, n, batch):
            yield aspcap_rows(min(batch, n - start), seed=start, first=start + 1)

    t = time.perf_counter()
    lake.upsert("aspcap", batches())
    return _rates(lake, n, time.perf_counter() - t)


def compacting_seconds(lake: Lake, table: str | None = None) -> float:
    """Seconds spent in the automatic compactions (of ``table``, or all), each timed from the commit
    before it to its own, in the lake log."""
    import datetime as dt
    import itertools

    return sum(
        (dt.datetime.fromisoformat(c.time) - dt.datetime.fromisoformat(prev.time)).total_seconds()
        for prev, c in itertools.pairwise(lake.versions())
        if c.operation == "compact" and table in (None, c.table)
    )


def _rates(lake: Lake, n: int, seconds: float) -> dict[str, float]:
    """Rows/s with and without the automatic compactions, and peak RSS."""
    compacting = compacting_seconds(lake)
    return {"per_s": n / seconds, "per_s_writes_only": n / (seconds - compacting), "peak_mb": own_peak_mb()}


def streaming_append_spectra(path: str, n: int) -> dict[str, float]:
    """Append ``n`` synthetic APOGEE spectra in batches of 2,000 (generation included); rate and peak RSS."""
    lake = Lake.init(path)
    src = S.sources(n, seed=5)
    lake.write("source", src)
    t = time.perf_counter()
    for b in S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=6, batch=2000):
        lake.write("apogee_star", b)
    return _rates(lake, n, time.perf_counter() - t)


def own_peak_mb() -> float:
    """Peak resident memory of this process image (VmHWM; ru_maxrss would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return peak_rss_mb()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def aspcap_rows(n: int, seed: int = 0, first: int = 1) -> pa.Table:
    """``n`` ASPCAP results (spectrum_pk ``first`` ...) with every declared column, on Galactic-plane
    positions."""
    rng = np.random.default_rng(seed)
    pks = np.arange(first, first + n)
    tbl = S.results("aspcap", pks, seed=seed)
    ra, dec = S.sky_positions(n, rng)
    extra = {
        "_healpix_29": pa.array(healpix29(ra, dec)),
        "source_pk": pa.array(pks),
        "sdss_id": pa.array(pks),
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
    q_plain_group = Q_GROUP.format(t=f"read_parquet('{pq_path}')")
    side = interleaved(
        {
            "lake count": lambda: con.execute(Q_COUNT.format(t="aspcap")).fetchall(),
            "plain count": lambda: plain.execute(plain_sql).fetchall(),
            "lake group": lambda: con.execute(Q_GROUP.format(t="aspcap")).fetchall(),
            "plain group": lambda: plain.execute(q_plain_group).fetchall(),
        }
    )
    timings: dict[str, dict[str, float]] = {}
    timings["astra-lake (snapshot views + macros)"] = {"count": side["lake count"], "group": side["lake group"]}
    timings["DuckDB on one plain Parquet file, bare bitwise filter"] = {
        "count": side["plain count"],
        "group": side["plain group"],
    }
    n_files = len(lake.snapshot().files("aspcap"))
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
        f"Lake and plain-file timings are medians of 15 runs taken in turns. The lake table has {n_files} "
        "files (after the automatic compaction of the upsert's leaves).",
        f"Upsert of {n:,} results (held in memory) into an empty table, automatic compaction included: "
        f"{n / upsert_s:,.0f} rows/s.",
    ]
    return lines


def streaming_bench(workdir: Path, n_results: int, n_spectra: int) -> list[str]:
    """Write rates and the writer's own peak memory (fresh process each), at 1/4 and full size."""
    lines = [
        "| write (fresh process, data generated batch by batch) | size | rate | rate without the automatic compactions "
        "| peak RSS |",
        "|---|---:|---:|---:|---:|",
    ]
    runs = (
        ("upsert ASPCAP results (223 columns)", "rows", streaming_upsert, n_results),
        ("append APOGEE spectra (8575 px; generation included)", "spectra", streaming_append_spectra, n_spectra),
    )
    for label, unit, fn, full in runs:
        for n in (full // 4, full):
            r = in_child(fn, str(workdir / f"{fn.__name__}_{n}"), n)
            lines.append(
                f"| {label} | {n:,} | {r['per_s']:,.0f} {unit}/s | {r['per_s_writes_only']:,.0f} {unit}/s "
                f"| {r['peak_mb']:,.0f} MB |"
            )
            shutil.rmtree(workdir / f"{fn.__name__}_{n}", ignore_errors=True)
    return lines


def _fits_per_source(path: Path, one: object) -> None:
    """A 4-HDU mwmStar-like file holding one source's spectrum (flux, ivar, flags) in the APOGEE/APO HDU."""
    spec = one  # a Spectra
    hdus = [fits.PrimaryHDU()] + [
        fits.BinTableHDU.from_columns(
            [
                fits.Column("flux", "8575E", array=spec.flux),  # type: ignore[attr-defined]
                fits.Column("ivar", "8575E", array=spec.ivar),  # type: ignore[attr-defined]
                fits.Column("pixel_flags", "8575J", array=spec.pixel_flags),  # type: ignore[attr-defined]
            ],
            name=name,
        )
        for name in ("BOSS/APO", "BOSS/LCO", "APOGEE/APO", "APOGEE/LCO")
    ]
    fits.HDUList(hdus).writeto(path, overwrite=True)


def lookup_vs_fits(lake: Lake, sample: np.ndarray, fdir: Path) -> tuple[list[float], list[float]]:
    """Seconds of ``lake.spectra`` and of reading that source's own mwmStar-like FITS file (written to
    ``fdir`` first), in turns over the sources ``sample``."""
    fdir.mkdir(exist_ok=True)
    for sid in sample:
        _fits_per_source(fdir / f"mwmStar-{sid}.fits", lake.spectra(int(sid), "apogee_star"))

    def fits_read(sid: int) -> None:
        with fits.open(fdir / f"mwmStar-{sid}.fits") as h:
            d = h[3].data
            _ = (np.array(d["flux"][0]), np.array(d["ivar"][0]), np.array(d["pixel_flags"][0]))

    lake.spectra(int(sample[0]), "apogee_star")
    fits_read(int(sample[0]))
    lat_lake, lat_fits = [], []
    for sid in sample:
        t = time.perf_counter()
        lake.spectra(int(sid), "apogee_star")
        lat_lake.append(time.perf_counter() - t)
        t = time.perf_counter()
        fits_read(int(sid))
        lat_fits.append(time.perf_counter() - t)
    return lat_lake, lat_fits


def _scans(lake: Lake) -> tuple[int, float, float, float, float]:
    """Files, and full-scan speeds in GB/s of decoded pixel arrays (medians of 3): flux through a pyarrow
    dataset and through DuckDB SQL (``list_sum`` per spectrum, and ``unnest``), and flux + ivar +
    pixel_flags through ``lake.spectra_batches``."""
    import pyarrow.dataset as pads

    paths = lake.snapshot().paths("apogee_star")
    con = lake.connect()
    array_gb = sum(f.num_rows for f in lake.snapshot().files("apogee_star")) * 8575 * 4 / 1e9

    def rate(gb: float, run: Callable[[], object]) -> float:
        times = []
        for _ in range(3):
            t = time.perf_counter()
            run()
            times.append(time.perf_counter() - t)
        return gb / statistics.median(times)

    scan_pa = rate(array_gb, lambda: pads.dataset(paths, format="parquet").to_table(columns=["flux"]))
    scan_duck = rate(array_gb, lambda: con.execute("SELECT sum(list_sum(flux)) FROM apogee_star").fetchall())
    unnest = "SELECT sum(f) FROM (SELECT unnest(flux) AS f FROM apogee_star)"
    scan_unnest = rate(array_gb, lambda: con.execute(unnest).fetchall())
    scan_lake = rate(3 * array_gb, lambda: sum(len(b) for b in lake.spectra_batches("apogee_star")))
    return len(paths), scan_pa, scan_duck, scan_unnest, scan_lake


def spectra_bench(workdir: Path, n_spectra: int) -> list[str]:
    """One source's spectra: lake.spectra vs opening that source's own FITS file, in turns over the same
    200 random sources; full scans; at 1/4 and full size."""
    lines = [
        "| spectra in lake | files | lake.spectra(sdss_id) median | p99 | per-source FITS file (astropy) median | "
        "p99 | lake / FITS | flux scan, pyarrow | flux scan, DuckDB list_sum | DuckDB unnest | "
        "lake.spectra_batches (3 arrays) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    last: tuple[Lake, np.ndarray] | None = None
    compacted: list[str] = []
    for n in (n_spectra // 4, n_spectra):
        lake = Lake.init(workdir / f"spectra_{n}")
        src = S.sources(n, seed=5)
        lake.write("source", src)
        ids = src.column("sdss_id").to_numpy()
        for batch in S.spectra("apogee_star", ids, seed=6, batch=2000):
            lake.write("apogee_star", batch)
        sample = np.random.default_rng(1).choice(ids, min(200, n), replace=False)
        lat_lake, lat_fits = lookup_vs_fits(lake, sample, workdir / f"fits_{n}")
        n_files, scan_pa, scan_duck, scan_unnest, scan_lake = _scans(lake)
        ml, mf = statistics.median(lat_lake), statistics.median(lat_fits)
        lines.append(
            f"| {n:,} | {n_files} | {ml * 1e3:.1f} ms | {np.percentile(lat_lake, 99) * 1e3:.1f} ms | {mf * 1e3:.1f} ms "
            f"| {np.percentile(lat_fits, 99) * 1e3:.1f} ms | {ml / mf:.2f}x | {scan_pa:.2f} GB/s | {scan_duck:.2f} GB/s "
            f"| {scan_unnest:.2f} GB/s | {scan_lake:.2f} GB/s |"
        )
        last = (lake, sample)
        lake.compact("apogee_star")  # the maintenance command: one file per leaf
        n_files, scan_pa, scan_duck, scan_unnest, scan_lake = _scans(lake)
        compacted.append(
            f"| {n:,} | {n_files} | {scan_pa:.2f} GB/s | {scan_duck:.2f} GB/s | {scan_unnest:.2f} GB/s | {scan_lake:.2f} GB/s |"
        )
    assert last is not None
    lines += [
        "",
        "After `lake.compact()` (one file per leaf):",
        "",
        "| spectra in lake | files | flux scan, pyarrow | flux scan, DuckDB list_sum | DuckDB unnest | "
        "lake.spectra_batches (3 arrays) |",
        "|---:|---:|---:|---:|---:|---:|",
        *compacted,
        "",
        "Lookups and FITS reads alternate over the same 200 random sources (one FITS file per source, in the "
        "page cache, as the mwmStar path is when cached). Scans: GB/s of decoded float32/int32 pixel arrays (medians of 3); "
        "pyarrow and DuckDB (`sum(list_sum(flux))`, and `sum(f)` over `unnest(flux) AS f`) read flux, "
        "`lake.spectra_batches` flux, ivar and pixel_flags "
        "into numpy blocks.",
    ]
    lines += _row_group_tradeoff(workdir, last[0].snapshot().paths("apogee_star"), last[1], last[0])
    return lines


def _group_bounds(pf: pq.ParquetFile) -> np.ndarray:
    """Closed ``_healpix_29`` interval of each row group (from its statistics; everything without)."""
    col = pf.schema_arrow.get_field_index("_healpix_29")
    bounds = np.empty((pf.metadata.num_row_groups, 2), dtype=np.int64)
    for i in range(len(bounds)):
        st = pf.metadata.row_group(i).column(col).statistics
        has = st is not None and st.has_min_max
        bounds[i] = (int(st.min), int(st.max)) if has else (np.iinfo(np.int64).min, np.iinfo(np.int64).max)
    return bounds


def _row_group_tradeoff(workdir: Path, paths: list[str], sample: np.ndarray, lake: Lake) -> list[str]:
    """Lookup latency and scan speed for the (compacted) lake's files rewritten with other row-group sizes
    and the lake's encodings (files pruned by their _healpix_29 range, row groups by their statistics)."""
    import pyarrow.dataset as pads

    from astra_lake.lake.files import _encodings
    from astra_lake.lake.healpix import meeting
    from astra_lake.query.spectra import SourceIndex

    index = SourceIndex(lake.snapshot())
    entries = lake.snapshot().files("apogee_star")
    out = ["", "| row group (spectra) | lookup median | lookup p99 | flux scan GB/s (threads) |", "|---:|---:|---:|---:|"]
    for rg in (16, 64, 256, 1024):
        files = []
        for i, (p, f) in enumerate(zip(paths, entries, strict=True)):
            dst = workdir / f"rg{rg}_{i}.parquet"
            t = pq.read_table(p)
            dictionary, compression, split = _encodings(t.schema, lake.catalog.schema.table("apogee_star").codec)
            pq.write_table(
                t, dst, row_group_size=rg, compression=compression, use_byte_stream_split=split, use_dictionary=dictionary
            )
            files.append((f.hmin, f.hmax, pq.ParquetFile(dst, memory_map=True, pre_buffer=False), dst))
        lat = []
        for sid in sample[:100]:
            h = int(index.sources(int(sid))[1][0])
            s = time.perf_counter()
            for lo, hi, pf, _ in files:
                if lo is not None and not lo <= h <= hi:
                    continue
                groups = [int(g) for g in meeting(np.array([[h, h + 1]], dtype=np.int64), _group_bounds(pf))]
                if groups:
                    pf.read_row_groups(groups)
            lat.append(time.perf_counter() - s)
        t0 = time.perf_counter()
        n = pads.dataset([str(f[3]) for f in files], format="parquet").to_table(columns=["flux"]).num_rows
        gbs = n * 8575 * 4 / 1e9 / (time.perf_counter() - t0)
        out.append(f"| {rg} | {statistics.median(lat) * 1e3:.1f} ms | {np.percentile(lat, 99) * 1e3:.1f} ms | {gbs:.2f} |")
    return out
