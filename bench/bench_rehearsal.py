"""A survey-scale rehearsal: build a lake of 1,000,000 sources, 10,000,000 ASPCAP results of them and
200,000 APOGEE spectra (~20 GB of decoded pixels) streaming, with the automatic compaction on, then measure what operators
and scientists do with it.

    python bench/bench_rehearsal.py --scale 0.01          # smoke run: 100,000 results, 2,000 spectra
    python bench/bench_rehearsal.py --scale 0.25,1        # 1/4 and full size (the issue's sizes; hours)
    python bench/run.py rehearsal --scale 0.25,1          # the same, as a bench/run.py target (opt-in)

Each size runs in a fresh process (its peak RSS is its own; a sampling thread records the peak of each
phase and stops the run above ``--max-rss-gb``). Data are generated batch by batch
(``astra_lake.ingest.synthetic``), never held whole. Reported: write rates (rows/s and MB/s of Arrow
input, with and without generation and the automatic compactions), the flag-filtered count and a
flag group-by vs DuckDB on a plain Parquet export of the same rows, one-source lookups, the full scan
(``lake.spectra_batches``), ``compact`` and ``vacuum`` times, disk use, and peak memory per phase.
Per-size figures are kept as JSON in ``bench/results/`` and appended as a table with ``--append``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_lake import BAD_MASK, Q_COUNT, Q_GROUP, aspcap_rows, compacting_seconds, in_child, interleaved, lookup_vs_fits

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.lake.writer import parquet_scan

FULL_RESULTS = 10_000_000
FULL_SPECTRA = 200_000
FULL_SOURCES = 1_000_000  # ~1 M sources per release; every result and spectrum belongs to one of them
RESULT_BATCH = 100_000  # rows generated at a time
COMMIT_ROWS = 1_000_000  # results per upsert call (one commit each), as a pipeline run commits
SPECTRA_BATCH = 2_000  # spectra generated and written (one commit) at a time
SOURCE_BATCH = 100_000
DUCKDB_MEMORY = "4GB"  # the plain-Parquet connections' memory limit (DuckDB's default is 80 % of RAM)
RESULTS_DIR = Path(__file__).resolve().parent / "results"


class Memory:
    """Samples this process's memory every ``every`` s; ``phase(name)`` records the peaks inside it: RSS,
    and its anonymous part (RSS without the pages of memory-mapped files, which the kernel can drop at
    will: the spectra readers map their files). Above ``limit_mb`` of anonymous memory the run stops (exit
    code 3) rather than push the machine into swap or the OOM killer."""

    def __init__(self, limit_mb: float, every: float = 0.05) -> None:
        import psutil

        self._proc = psutil.Process()
        self.limit_mb, self.every = limit_mb, every
        self.peaks: dict[str, float] = {}
        self.anon_peaks: dict[str, float] = {}
        self._current = self._anon = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _now(self) -> tuple[float, float]:
        m = self._proc.memory_info()
        return m.rss / 2**20, (m.rss - m.shared) / 2**20

    def _sample(self) -> None:
        while not self._stop.wait(self.every):
            rss, anon = self._now()
            self._current, self._anon = max(self._current, rss), max(self._anon, anon)
            if anon > self.limit_mb:
                print(
                    f"rehearsal: {anon:,.0f} MB of anonymous memory, above the {self.limit_mb:,.0f} MB limit; stopping",
                    flush=True,
                )
                os._exit(3)

    @property
    def current(self) -> float:
        """Peak RSS (MB) of the phase running now."""
        return self._current

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._current, self._anon = self._now()
        try:
            yield
        finally:
            rss, anon = self._now()
            self.peaks[name], self.anon_peaks[name] = max(self._current, rss), max(self._anon, anon)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


class Timed:
    """Wraps an iterator of Arrow tables, adding up the seconds spent producing them and their bytes."""

    def __init__(self, it: Iterator[pa.Table]) -> None:
        self._it, self.seconds, self.nbytes, self.rows = it, 0.0, 0, 0

    def __iter__(self) -> Iterator[pa.Table]:
        while True:
            t = time.perf_counter()
            try:
                b = next(self._it)
            except StopIteration:
                self.seconds += time.perf_counter() - t
                return
            self.seconds += time.perf_counter() - t
            self.nbytes += b.nbytes
            self.rows += b.num_rows
            yield b


def disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def n_files(lake: Lake) -> dict[str, int]:
    snap = lake.snapshot()
    return {t: len(snap.files(t)) for t in ("source", "apogee_star", "aspcap")}


def write_sources(lake: Lake, n: int) -> tuple[float, npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """``n`` sources (sdss_id 1..n, SOURCE_BATCH per commit): seconds taken, and the ``source_pk`` and
    ``_healpix_29`` the lake gave each (index sdss_id - 1), which the results then carry."""
    t = time.perf_counter()
    for first in range(0, n, SOURCE_BATCH):
        lake.write("source", S.sources(min(SOURCE_BATCH, n - first), seed=first, first_sdss_id=first + 1))
    seconds = time.perf_counter() - t
    ids = lake.sql("SELECT source_pk, _healpix_29 FROM source ORDER BY sdss_id")
    return seconds, ids.column(0).to_numpy(), ids.column(1).to_numpy()


def linked_results(n: int, seed: int, first: int, source_pk: npt.NDArray[np.int64], h29: npt.NDArray[np.int64]) -> pa.Table:
    """ASPCAP results for spectrum_pk ``first`` ..., each of a stored source (sdss_id cycling through them),
    with that source's ``source_pk`` and sky cell, as results written by a pipeline run are."""
    tbl = aspcap_rows(n, seed=seed, first=first)
    sid = (np.arange(first, first + n) - 1) % len(source_pk)
    for name, values in (("sdss_id", sid + 1), ("source_pk", source_pk[sid]), ("_healpix_29", h29[sid])):
        i = tbl.schema.get_field_index(name)
        tbl = tbl.set_column(i, name, pa.array(values, tbl.schema.field(i).type))
    return tbl


def write_results(lake: Lake, n: int, n_sources: int, report: Callable[[dict[str, float]], None]) -> None:
    """``n_sources`` sources, then ``n`` ASPCAP results of them upserted, one commit per COMMIT_ROWS,
    generated RESULT_BATCH rows at a time; ``report`` gets the figures so far after each commit."""
    sources_s, source_pk, h29 = write_sources(lake, n_sources)
    wall = gen = nbytes = 0.0
    for first in range(0, n, COMMIT_ROWS):
        last = min(first + COMMIT_ROWS, n)
        rows = Timed(
            linked_results(min(RESULT_BATCH, last - s), s, s + 1, source_pk, h29) for s in range(first, last, RESULT_BATCH)
        )
        t = time.perf_counter()
        lake.upsert("aspcap", rows, batch_rows=RESULT_BATCH)
        wall += time.perf_counter() - t
        gen += rows.seconds
        nbytes += rows.nbytes
        compact = compacting_seconds(lake, "aspcap")
        report({"rows": last, "wall_s": wall, "gen_s": gen, "compact_s": compact, "arrow_bytes": nbytes, "sources_s": sources_s})


def write_spectra(lake: Lake, n: int, report: Callable[[dict[str, float]], None]) -> None:
    """``n`` APOGEE spectra of the sources sdss_id 1..n, SPECTRA_BATCH per commit; ``report`` gets the
    figures so far every 10 commits and at the end."""
    spectra = Timed(S.spectra("apogee_star", np.arange(1, n + 1, dtype=np.int64), seed=6, batch=SPECTRA_BATCH))
    t = time.perf_counter()
    for i, batch in enumerate(spectra):
        lake.write("apogee_star", batch)
        if i % 10 == 9 or spectra.rows == n:
            report(
                {
                    "rows": spectra.rows,
                    "wall_s": time.perf_counter() - t,
                    "gen_s": spectra.seconds,
                    "compact_s": compacting_seconds(lake, "apogee_star"),
                    "arrow_bytes": float(spectra.nbytes),
                }
            )


def queries(lake: Lake, plain: Path, repeats: int) -> dict[str, float]:
    """Medians (in turns) of the flag-filtered count and the flag group-by, lake views vs plain Parquet."""
    con = lake.connect()  # the lake's connection (configuration locked: DuckDB's default memory limit)
    other = duckdb.connect()
    other.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'")
    src = f"read_parquet('{plain}')"
    plain_count = f"SELECT count(*) FROM {src} WHERE (result_flags & {BAD_MASK}) = 0 AND teff BETWEEN 4000 AND 6000"
    counts = con.execute(Q_COUNT.format(t="aspcap")).fetchone(), other.execute(plain_count).fetchone()
    assert counts[0] == counts[1], counts  # the same rows, the same answer
    groups = con.execute(Q_GROUP.format(t="aspcap")).fetchall(), other.execute(Q_GROUP.format(t=src)).fetchall()
    assert groups[0] == groups[1]
    side = interleaved(
        {
            "lake_count": lambda: con.execute(Q_COUNT.format(t="aspcap")).fetchall(),
            "plain_count": lambda: other.execute(plain_count).fetchall(),
            "lake_group": lambda: con.execute(Q_GROUP.format(t="aspcap")).fetchall(),
            "plain_group": lambda: other.execute(Q_GROUP.format(t=src)).fetchall(),
        },
        repeats,
    )
    return side | {"count": float(counts[0][0])}  # type: ignore[index]


def export_plain(lake: Lake, dst: Path) -> float:
    """The aspcap table's stored rows as one plain zstd Parquet file (DuckDB COPY, bounded memory)."""
    con = duckdb.connect()
    con.execute(f"SET memory_limit = '{DUCKDB_MEMORY}'; SET preserve_insertion_order = false; SET enable_progress_bar = false")
    t = time.perf_counter()
    scan = parquet_scan(lake.snapshot().paths("aspcap"), options="union_by_name = true")
    con.execute(f"COPY (SELECT * FROM {scan}) TO '{dst}' (FORMAT parquet, COMPRESSION zstd, ROW_GROUP_SIZE 122880)")
    return time.perf_counter() - t


def result_lookups(lake: Lake, ids: np.ndarray) -> dict[str, float]:
    """Median seconds of one source's ASPCAP rows by sdss_id, every column (flags included) and four
    columns, through the lake's SQL view (a scan: rows are sorted by sky position) and through
    ``lake.lookup`` (the source's HEALPix cell -> the row groups holding it); answers asserted equal in size."""
    con = lake.connect()
    few = ["teff", "logg", "fe_h", "flag_bad"]
    queries = {"all": "SELECT * FROM aspcap WHERE sdss_id = ?", "few": f"SELECT {', '.join(few)} FROM aspcap WHERE sdss_id = ?"}
    lake.lookup("aspcap", int(ids[0]))  # builds the sdss_id index once
    times: dict[str, list[float]] = {}
    for sid in ids:
        for name, q in queries.items():
            t = time.perf_counter()
            n = len(con.execute(q, [int(sid)]).fetchall())
            times.setdefault(f"sql_{name}", []).append(time.perf_counter() - t)
            t = time.perf_counter()
            assert len(lake.lookup("aspcap", int(sid), columns=None if name == "all" else few)) == n > 0
            times.setdefault(f"lookup_{name}", []).append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


def full_scan(lake: Lake, repeats: int) -> tuple[float, int]:
    """Median seconds of reading every spectrum's flux + ivar + pixel_flags into numpy, and the count."""
    times, n = [], 0
    for _ in range(repeats):
        t = time.perf_counter()
        n = sum(len(b) for b in lake.spectra_batches("apogee_star"))
        times.append(time.perf_counter() - t)
    return statistics.median(times), n


def run_scale(workdir: str, scale: float, max_rss_gb: float, only: tuple[str, ...] = ()) -> dict[str, Any]:
    """Build the lake at ``scale`` of the full size in ``workdir`` and measure it (meant for a fresh process).
    The figures so far are saved after every phase and commit of the writes (a run stopped midway keeps them)."""
    mem = Memory(max_rss_gb * 1024)
    root = Path(workdir)
    n_res, n_spec = max(int(FULL_RESULTS * scale), 1000), max(int(FULL_SPECTRA * scale), 200)
    n_src = max(int(FULL_SOURCES * scale), n_spec)
    out: dict[str, Any] = {
        "scale": scale,
        "n_results": n_res,
        "n_spectra": n_spec,
        "n_sources": n_src,
        "load_start": os.getloadavg()[0],
    }
    out["time"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    saved = RESULTS_DIR / (
        f"rehearsal-{scale:g}.json" if not only else f"rehearsal-{scale:g}-{'+'.join(only).replace(' ', '_')}.json"
    )
    RESULTS_DIR.mkdir(exist_ok=True)

    def save(key: str | None = None, value: object = None) -> None:
        if key is not None:
            out[key] = value
        out["peak_mb"] = mem.peaks | {"(phase running)": mem.current}
        out["peak_anon_mb"] = mem.anon_peaks
        saved.write_text(json.dumps(out, indent=1))

    lake = Lake(root / "lake") if only and (root / "lake").exists() else Lake.init(root / "lake")  # --resume
    repeats = 5 if n_res <= 2_500_000 else 3
    phases: list[tuple[str, Callable[[], None]]] = []

    def phase(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
        def add(fn: Callable[[], None]) -> Callable[[], None]:
            phases.append((name, fn))
            return fn

        return add

    @phase("write results")
    def _() -> None:
        write_results(lake, n_res, n_src, lambda d: save("results", d))
        out["results_disk"] = disk_bytes(lake.catalog.store("aspcap").root)

    @phase("result lookups")
    def _() -> None:
        ids = np.random.default_rng(2).choice(np.arange(1, n_src + 1), 20, replace=False)
        out["result_lookups"] = result_lookups(lake, ids)

    @phase("write spectra")
    def _() -> None:
        write_spectra(lake, n_spec, lambda d: save("spectra", d))
        out["spectra_disk"] = disk_bytes(lake.catalog.store("apogee_star").root)
        out["files_written"] = n_files(lake)

    @phase("export plain Parquet")
    def _() -> None:
        out["export_s"] = export_plain(lake, root / "aspcap_plain.parquet")
        out["plain_disk"] = (root / "aspcap_plain.parquet").stat().st_size

    @phase("queries")
    def _() -> None:
        out["queries"] = queries(lake, root / "aspcap_plain.parquet", repeats)

    @phase("lookups")
    def _() -> None:
        rng = np.random.default_rng(1)
        sample = rng.choice(np.arange(1, n_spec + 1), min(50, n_spec), replace=False)
        lat_lake, lat_fits = lookup_vs_fits(lake, sample, root / "fits")
        out["lookup_spectra_s"], out["lookup_fits_s"] = statistics.median(lat_lake), statistics.median(lat_fits)
        shutil.rmtree(root / "fits", ignore_errors=True)

    @phase("full scan")
    def _() -> None:
        seconds, n = full_scan(lake, 3 if n_spec <= 20_000 else 1)
        assert n == n_spec, (n, n_spec)
        out["scan_s"] = seconds

    @phase("compact")
    def _() -> None:
        t = time.perf_counter()
        lake.compact()
        out["compact_s"] = time.perf_counter() - t
        out["files_compacted"] = n_files(lake)

    @phase("vacuum")
    def _() -> None:
        before = disk_bytes(root / "lake")
        t = time.perf_counter()
        gone = lake.vacuum(retention_hours=0, dry_run=False)
        out["vacuum_s"] = time.perf_counter() - t
        out["vacuum_files"] = sum(len(v) for v in gone.values())
        out["vacuum_freed"] = before - disk_bytes(root / "lake")
        out["lake_disk"] = disk_bytes(root / "lake")
        out["tables_disk"] = {t: disk_bytes(lake.catalog.store(t).root) for t in ("source", "apogee_star", "aspcap")}

    wall: dict[str, float] = {}
    if unknown := set(only) - {name for name, _ in phases}:
        raise SystemExit(f"unknown phase(s) {', '.join(sorted(unknown))}; phases: {', '.join(n for n, _ in phases)}")
    for name, fn in phases:
        if only and name not in only:
            continue
        print(f"rehearsal {scale}: {name} ...", flush=True)
        t = time.perf_counter()
        with mem.phase(name):
            fn()
        wall[name] = time.perf_counter() - t
        out["phase_s"] = wall
        save()
    mem.stop()
    out["peak_mb"], out["peak_anon_mb"], out["load_end"], out["complete"] = mem.peaks, mem.anon_peaks, os.getloadavg()[0], True
    saved.write_text(json.dumps(out, indent=1))
    return out


def _fmt(r: dict[str, Any]) -> dict[str, str]:
    """The table's cells of one size ("not reached" for figures of phases a stopped run did not reach)."""
    decoded_gb = r["n_spectra"] * 8575 * 4 * 3 / 1e9

    def rates(d: dict[str, float], target: int) -> str:
        walls = (d["wall_s"], d["wall_s"] - d["gen_s"], d["wall_s"] - d["gen_s"] - d["compact_s"])
        partial = "" if d["rows"] == target else f" (stopped after {d['rows']:,.0f})"
        return " / ".join(f"{d['rows'] / w:,.0f}" for w in walls) + partial

    def mbs(d: dict[str, float]) -> str:
        return f"{d['arrow_bytes'] / 1e6 / (d['wall_s'] - d['gen_s']):,.0f}"

    def side(q: dict[str, float], what: str) -> str:
        lake, plain = q[f"lake_{what}"], q[f"plain_{what}"]
        return f"{lake * 1e3:,.0f} ms / {plain * 1e3:,.0f} ms ({lake / plain:.2f}x)"

    cells: dict[str, Callable[[], str]] = {
        "results (ASPCAP rows x 223 columns)": lambda: f"{r['n_results']:,}",
        "sources (every result's and spectrum's; written first), write s": lambda: (
            f"{r['n_sources']:,}, {r['results']['sources_s']:.0f} s"
            if "n_sources" in r
            else "as many as spectra (results unlinked)"
        ),
        "spectra (APOGEE, 8575 px)": lambda: f"{r['n_spectra']:,} ({decoded_gb:.1f} GB decoded)",
        "results upsert, rows/s: all / without generation / without generation and compactions": lambda: rates(
            r["results"], r["n_results"]
        ),
        "results upsert, MB/s of Arrow input (without generation)": lambda: mbs(r["results"]),
        "spectra append, spectra/s: all / without generation / without generation and compactions": lambda: rates(
            r["spectra"], r["n_spectra"]
        ),
        "spectra append, MB/s of Arrow input (without generation)": lambda: mbs(r["spectra"]),
        "automatic compactions, s (results / spectra)": lambda: " / ".join(
            f"{r[k]['compact_s']:.0f}" if k in r else "not reached" for k in ("results", "spectra")
        ),
        "disk after writes (superseded files kept until vacuum), GB (results / spectra)": lambda: (
            f"{r['results_disk'] / 1e9:.2f} / {r['spectra_disk'] / 1e9:.2f}"
        ),
        "files after writes (source / apogee_star / aspcap)": lambda: " / ".join(str(v) for v in r["files_written"].values()),
        "export of results to plain Parquet (DuckDB COPY), s; its size, GB": lambda: (
            f"{r['export_s']:.1f}; {r['plain_disk'] / 1e9:.2f}"
        ),
        "flag-filtered count: lake / plain Parquet (ratio)": lambda: side(r["queries"], "count"),
        "flag group-by (28 bits): lake / plain Parquet (ratio)": lambda: side(r["queries"], "group"),
        "one source's spectra: lake.spectra / its own FITS file (median of 50)": lambda: (
            f"{r['lookup_spectra_s'] * 1e3:.1f} ms / {r['lookup_fits_s'] * 1e3:.1f} ms"
        ),
        "one source's ASPCAP rows by sdss_id, SQL view / lake.lookup (median of 20): every column; 4 columns": lambda: (
            f"{r['lookup_result_s'] * 1e3:,.0f} ms / (not measured)"
            if "result_lookups" not in r
            else "; ".join(
                f"{r['result_lookups'][f'sql_{k}'] * 1e3:,.0f} ms / {r['result_lookups'][f'lookup_{k}'] * 1e3:,.1f} ms"
                for k in ("all", "few")
            )
        ),
        "full scan, lake.spectra_batches (flux+ivar+flags), GB/s decoded": lambda: (
            f"{decoded_gb / r['scan_s']:.2f} ({r['scan_s']:.0f} s)"
        ),
        "compact (whole lake), s; files after": lambda: (
            f"{r['compact_s']:.1f}; {' / '.join(str(v) for v in r['files_compacted'].values())}"
        ),
        "vacuum (retention 0), s; files deleted, GB freed": lambda: (
            f"{r['vacuum_s']:.1f}; {r['vacuum_files']:,}, {r['vacuum_freed'] / 1e9:.2f}"
        ),
        "lake on disk after vacuum, GB": lambda: f"{r['lake_disk'] / 1e9:.2f}",
        "after vacuum, GB (source / apogee_star / aspcap)": lambda: " / ".join(
            f"{v / 1e9:.2f}" for v in r["tables_disk"].values()
        ),
        "peak RSS per phase, MB": lambda: ", ".join(f"{k} {v:,.0f}" for k, v in r["peak_mb"].items()),
        "peak anonymous memory per phase (RSS without mapped file pages), MB": lambda: ", ".join(
            f"{k} {v:,.0f}" for k, v in r["peak_anon_mb"].items()
        ),
        "wall per phase, s": lambda: ", ".join(f"{k} {v:,.0f}" for k, v in r["phase_s"].items()),
        "load average (start / end), 2 cores": lambda: f"{r['load_start']:.1f} / {r.get('load_end', float('nan')):.1f}",
    }
    out = {}
    for k, fn in cells.items():
        try:
            out[k] = fn()
        except KeyError:
            out[k] = "not reached"
    return out


def table(runs: list[dict[str, Any]]) -> list[str]:
    """One markdown table: a row per figure, a column per size."""
    cells = [_fmt(r) for r in runs]
    head = [f"scale {r['scale']:g} ({r['time']})" for r in runs]
    lines = ["| figure | " + " | ".join(head) + " |", "|---|" + "---:|" * len(runs)]
    lines += [f"| {k} | " + " | ".join(c[k] for c in cells) + " |" for k in cells[0]]
    return lines


def run(workdir: Path, scales: list[float], max_rss_gb: float = 8.0, keep: bool = False, only: tuple[str, ...] = ()) -> list[str]:
    """Each size in a fresh process, in turn; its lake is deleted before the next unless ``keep``."""
    runs = []
    for scale in scales:
        d = workdir / f"rehearsal-{scale:g}"
        try:
            r = in_child(run_scale, str(d), scale, max_rss_gb, only)
        finally:
            if not keep:
                shutil.rmtree(d, ignore_errors=True)
        runs.append(r)
        print("\n".join(table(runs)), flush=True)
    return [
        f"### Rehearsal ({platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()})",
        "",
        *table(runs),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", default="0.25,1", help="sizes as fractions of the full size, comma-separated")
    ap.add_argument("--max-rss-gb", type=float, default=8.0, help="stop a size whose RSS goes above this")
    ap.add_argument("--workdir", type=Path, default=None, help="parent of the lakes (default: a new /tmp/rehearsal-*)")
    ap.add_argument("--append", type=Path, default=None, help="append the table to this markdown file")
    ap.add_argument("--phases", default="", help='only these phases, comma-separated (e.g. "write results,result lookups")')
    ap.add_argument("--resume", type=Path, default=None, help="run --phases on the lake a --keep run left in this folder")
    ap.add_argument("--keep", action="store_true", help="keep the lakes (under --workdir) for later measurements")
    ap.add_argument("--table", nargs="*", type=float, help="only print the table of these stored sizes")
    args = ap.parse_args()
    only = tuple(p.strip() for p in args.phases.split(",") if p.strip())
    if args.resume:
        if not only or "," in args.scale:
            raise SystemExit("--resume needs --phases and one --scale (the kept run's)")
        lines = table([in_child(run_scale, str(args.resume), float(args.scale), args.max_rss_gb, only)])
    elif args.table:
        lines = table([json.loads((RESULTS_DIR / f"rehearsal-{s:g}.json").read_text()) for s in args.table])
    else:
        work = Path(tempfile.mkdtemp(prefix="rehearsal-", dir=args.workdir))
        try:
            lines = run(work, [float(s) for s in args.scale.split(",")], args.max_rss_gb, args.keep, only)
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    print("\n".join(lines))
    if args.append:
        with args.append.open("a") as f:
            f.write("\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
