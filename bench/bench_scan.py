"""Full scans and one-source lookups of a spectrum table, next to this machine's physical limits.

``python bench/run.py scan`` builds an APOGEE lake (compacted: one file per leaf), then measures, in one
process: the machine (memory copy, page-cache read, LZ4 decode per core), the parts of a scan (reading
the files' bytes, decompressing the pixel pages, joining byte streams into numpy), ``lake.spectra_batches``
(flux + ivar + pixel_flags into numpy) on 1 and 2 threads next to the pyarrow list decode it replaces,
DuckDB/Polars reading the same columns as lists, pixel layouts, and the lookup vs a per-source FITS file.
Every scan reopens the files (the per-process file cache is cleared); the page cache is warm.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.lake.list_pages import ListPages, _copy_values, _pages
from astra_lake.query.spectra import open_file, pixels_2d

PIXELS = ("flux", "ivar", "pixel_flags")


def timed(fn: Callable[[], object], repeats: int = 3, reopen: bool = True) -> tuple[float, float]:
    """Median wall and process-CPU seconds of ``fn`` (after one warm-up run); ``reopen``: clear the
    per-process cache of open files before each run."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if reopen:
            open_file.cache_clear()
        w, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - w)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def on_threads(fn: Callable[[int], object], threads: int) -> None:
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(fn, range(threads)))


def machine_limits(paths: list[str]) -> dict[str, float]:
    """GB/s: numpy copy (1 and 2 threads), reading the lake's files from the page cache, LZ4 decode of
    the lake's flux pages (output bytes; 1 and 2 threads)."""
    n = 1 << 26  # 256 MB of float32
    src, dst = np.ones(n, np.float32), np.empty(n, np.float32)
    half = n // 2

    def copy_half(i: int) -> None:
        np.copyto(dst[i * half : (i + 1) * half], src[i * half : (i + 1) * half])

    out = {
        "memcpy_1": src.nbytes / 1e9 / timed(lambda: np.copyto(dst, src))[0],
        "memcpy_2": src.nbytes / 1e9 / timed(lambda: on_threads(copy_half, 2))[0],
    }
    size = sum(os.path.getsize(p) for p in paths)
    buf = bytearray(max(os.path.getsize(p) for p in paths))

    def read_all() -> None:
        for p in paths:
            with open(p, "rb", buffering=0) as f:
                f.readinto(buf)

    out["read"] = size / 1e9 / timed(read_all)[0]
    codec = pa.Codec("lz4_raw")
    pages = []
    for p in paths[:40]:
        f = open_file(p)
        col = f.pages._column("flux")
        data = Path(p).read_bytes()
        for start, end in col.ranges:
            pages += [(data[pg.start : pg.start + pg.size], pg.uncompressed) for pg in _pages(memoryview(data), start, end)]
    raw = sum(u for _, u in pages)

    def decode(i: int, step: int = 1) -> None:
        for body, size_ in pages[i::step]:
            codec.decompress(body, size_)

    out["lz4_1"] = raw / 1e9 / timed(lambda: decode(0))[0]
    out["lz4_2"] = raw / 1e9 / timed(lambda: on_threads(lambda i: decode(i, 2), 2))[0]
    return out


def scan_parts(paths: list[str], npix: int) -> dict[str, float]:
    """GB/s of decoded arrays per CPU-second (one thread) of the parts of the page path, on up to 40
    files: opening files (footers, metadata columns), decompressing the pixel pages, and copying the
    decompressed values (byte streams re-joined) into new ``(n, npix)`` arrays."""
    paths = paths[:40]
    gb = sum(int(open_file(p).pages.rows.sum()) for p in paths) * npix * 4 * len(PIXELS) / 1e9

    def opened() -> None:
        for p in paths:
            open_file(p).read([0], ["spectrum_pk"])

    def pages(keep: bool) -> list[tuple[np.ndarray, int, int]]:
        out = []
        for p in paths:
            f = open_file(p)
            for name in PIXELS:
                col = f.pages._column(name)
                for start, end in col.ranges:
                    for pg in _pages(f.pages._buf, start, end):
                        values = f.pages._values(col, pg)  # freed at once unless kept, as in a scan
                        out += [(values, pg.encoding, pg.num_values)] if keep else []
        return out

    def decompress() -> None:
        pages(keep=False)

    values = pages(keep=True)

    def copy() -> None:
        for v, encoding, n in values:
            _copy_values(v, encoding, n, 0, np.empty(n, np.float32))

    parts = {"open": gb / timed(opened)[1]}
    return parts | {k: gb / timed(fn, reopen=False)[1] for k, fn in (("decompress", decompress), ("copy", copy))}


def pyarrow_scan(paths: list[str], npix: int, threads: int) -> None:
    """The previous path: pyarrow's list decode of the three columns, then (n, npix) numpy arrays."""

    def one(i: int) -> None:
        for p in paths[i::threads]:
            t = pq.ParquetFile(p, memory_map=True).read(columns=list(PIXELS), use_threads=False)
            for name, dtype in zip(PIXELS, (np.float32, np.float32, np.int32), strict=True):
                pixels_2d(t.column(name), npix, dtype)

    on_threads(one, threads)


def layouts(paths: list[str], workdir: Path, npix: int) -> list[str]:
    """Size and decode speed (process CPU, one thread) of flux under other encodings/codecs/page versions."""
    sample = pa.concat_tables([pq.read_table(p, columns=["flux"]) for p in paths[:24]])
    raw = sample.num_rows * npix * 4
    lines = [
        "| flux layout | size / raw | page path GB/s per core | pyarrow list decode GB/s per core |",
        "|---|---:|---:|---:|",
    ]
    cases = {
        "byte-stream-split + LZ4, page v1 (the lake's)": {"compression": "lz4", "use_byte_stream_split": ["flux.list.element"]},
        "byte-stream-split + LZ4, page v2": {
            "compression": "lz4",
            "use_byte_stream_split": ["flux.list.element"],
            "data_page_version": "2.0",
        },
        "plain + LZ4": {"compression": "lz4"},
        "plain, uncompressed": {"compression": "none"},
        "byte-stream-split + zstd(1)": {
            "compression": "zstd",
            "compression_level": 1,
            "use_byte_stream_split": ["flux.list.element"],
        },
    }
    for name, opts in cases.items():
        path = workdir / "layout.parquet"
        pq.write_table(
            sample.replace_schema_metadata({"astra_lake.shape.flux": str(npix)}),
            path,
            row_group_size=16,
            use_dictionary=False,
            **opts,
        )
        data = memoryview(path.read_bytes())
        pages = ListPages(data, pq.read_metadata(path))
        out = np.empty((sample.num_rows, npix), np.float32)
        groups = list(range(len(pages.rows)))
        fast = timed(lambda pages=pages, out=out, groups=groups: pages.read("flux", groups, out))[1]
        slow = timed(lambda path=path: pixels_2d(pq.read_table(path, use_threads=False).column(0), npix, np.float32))[1]
        lines.append(f"| {name} | {os.path.getsize(path) / raw:.2f} | {raw / 1e9 / fast:.2f} | {raw / 1e9 / slow:.2f} |")
    return lines


def lookups(lake: Lake, workdir: Path) -> tuple[float, float, float, float]:
    """Median and p99 seconds of lake.spectra and of reading that star's own mwmStar-like FITS file, in
    turns over the same 200 random sources."""
    from bench_lake import lookup_vs_fits

    ids = lake.sql("SELECT DISTINCT sdss_id FROM apogee_star").column(0).to_numpy()
    sample = np.random.default_rng(1).choice(ids, min(200, len(ids)), replace=False)
    lat_lake, lat_fits = lookup_vs_fits(lake, sample, workdir / "fits")
    return (
        statistics.median(lat_lake),
        float(np.percentile(lat_lake, 99)),
        statistics.median(lat_fits),
        float(np.percentile(lat_fits, 99)),
    )


def run(workdir: Path, n_spectra: int) -> list[str]:
    lake = Lake.init(workdir / f"scan_{n_spectra}")
    src = S.sources(n_spectra, seed=5)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=6, batch=2000):
        lake.write("apogee_star", batch)
    lake.compact("apogee_star")
    paths = lake.snapshot().paths("apogee_star")
    npix = lake.catalog.schema.table("apogee_star").grid.npix  # type: ignore[union-attr]
    gb = n_spectra * npix * 4 * 3 / 1e9  # flux + ivar (float32) + pixel_flags (int32)
    file_gb = sum(os.path.getsize(p) for p in paths) / 1e9
    load = os.getloadavg()[0]
    lim = machine_limits(paths)
    parts = scan_parts(paths, npix)

    def batches(threads: int) -> Callable[[], object]:
        return lambda: sum(len(b) for b in lake.spectra_batches("apogee_star", threads=threads))

    scans = {f"lake.spectra_batches, {t} thread{'s' * (t > 1)}": timed(batches(t)) for t in (1, 2)}
    scans |= {
        f"pyarrow list decode (the previous path), {t} thread{'s' * (t > 1)}": timed(lambda t=t: pyarrow_scan(paths, npix, t))
        for t in (1, 2)
    }
    con = lake.connect()
    unnest = "SELECT sum(f) FROM (SELECT unnest(flux) AS f FROM apogee_star)"
    duck = timed(lambda: con.execute(unnest).fetchall())
    assert con.execute("SELECT flux[100] FROM apogee_star LIMIT 1").fetchone() is not None  # SQL sees lists
    assert lake.scan("apogee_star").collect_schema()["flux"] == pl.Array(pl.Float32, npix)
    ml, p99l, mf, p99f = lookups(lake, workdir)
    two = scans["lake.spectra_batches, 2 threads"][0]
    lines = [
        f"### {n_spectra:,} APOGEE spectra, {len(paths)} files ({file_gb:.2f} GB on disk; {gb:.2f} GB of decoded "
        f"flux + ivar + pixel_flags); load average {load:.1f} on {os.cpu_count()} cores at the start",
        "",
        "| machine limit | GB/s |",
        "|---|---:|",
        f"| memory copy (numpy), 1 / 2 threads | {lim['memcpy_1']:.1f} / {lim['memcpy_2']:.1f} |",
        f"| page-cache read of the lake's files (file bytes) | {lim['read']:.1f} |",
        f"| LZ4 decode of the lake's flux pages (output bytes), 1 / 2 threads | {lim['lz4_1']:.1f} / {lim['lz4_2']:.1f} |",
        "",
        "| scan of flux + ivar + pixel_flags into numpy | wall | GB/s (wall) | GB/s per CPU-second |",
        "|---|---:|---:|---:|",
    ]
    for name, (wall, cpu) in scans.items():
        lines.append(f"| {name} | {wall:.2f} s | {gb / wall:.2f} | {gb / cpu:.2f} |")
    lines += [
        f"| DuckDB `sum(f)` over `unnest(flux)` (flux only) | {duck[0]:.2f} s | {gb / 3 / duck[0]:.2f} "
        f"| {gb / 3 / duck[1]:.2f} |",
        "",
        "| part of the page path (one thread) | GB/s of decoded arrays per CPU-second |",
        "|---|---:|",
        f"| I/O: read the files' bytes from the page cache (wall) | {gb / (file_gb / lim['read']):.1f} |",
        f"| open files (footer, metadata columns) | {parts['open']:.1f} |",
        f"| decode: decompress the pixel pages (LZ4; zstd for flags) | {parts['decompress']:.1f} |",
        f"| copy: re-join byte streams / copy into new (n, npix) arrays | {parts['copy']:.1f} |",
        "",
        f"2-thread scan: {gb / two:.2f} GB/s = {gb / two / (2 * lim['lz4_1']):.0%} of two cores' LZ4 decode rate and "
        f"{gb / two / lim['memcpy_2']:.0%} of the 2-thread copy bandwidth.",
        "",
        *layouts(paths, workdir, npix),
        "",
        "| one source's spectra (200 random sources, in turns) | median | p99 |",
        "|---|---:|---:|",
        f'| `lake.spectra(sdss_id, "apogee_star")` | {ml * 1e3:.2f} ms | {p99l * 1e3:.2f} ms |',
        f"| astropy, that source's own mwmStar-like FITS file | {mf * 1e3:.2f} ms | {p99f * 1e3:.2f} ms |",
        f"| lake / FITS | {ml / mf:.2f}x | |",
    ]
    return lines
