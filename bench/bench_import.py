"""import-postgres speed: rows/s of an ASPCAP result table (1 M rows x 200+ columns, shaped like Astra's)
from PostgreSQL into the lake, against PostgreSQL's own ``COPY ... TO`` of the same table, side by side.

The server is started here (Debian's binaries, as user postgres when run as root). Results reference
250 k spectra of 250 k sources (four Astra versions each), which are imported first.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa

from astra_lake import Lake
from astra_lake.ingest import synthetic as S

VERSIONS = ("0.5.0", "0.6.0", "0.7.0", "0.8.0")  # results per spectrum: one per Astra major.minor


def _server() -> tuple[str, Callable[[], None]] | None:
    """Start PostgreSQL on loopback; its DSN and a stop function (None when it is not installed)."""
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    if initdb is None:
        return None
    bindir = Path(initdb).resolve().parent
    root = Path(tempfile.mkdtemp(prefix="astra-lake-bench-pg-"))  # its own directory: the server user must enter it
    user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if user:
        shutil.chown(root, "postgres")
    data = str(root / "data")
    subprocess.run([*user, str(bindir / "initdb"), "-D", data, "-A", "trust", "-U", "postgres"], check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c shared_buffers=1GB -c fsync=off"
    pg_ctl = [*user, str(bindir / "pg_ctl"), "-D", data]
    subprocess.run([*pg_ctl, "-o", opts, "-w", "-l", str(root / "log"), "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*pg_ctl, "-m", "fast", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)

    return f"postgresql://postgres@127.0.0.1:{port}/postgres", stop


def astra_tables(n_spectra: int) -> dict[str, pa.Table]:
    """Astra's source, coadded-spectrum and ASPCAP tables (Astra names and types: real, bigint flags, naive times)."""
    created = pa.array([dt.datetime(2024, 1, 1)] * n_spectra, pa.timestamp("us"))
    pks = np.arange(1, n_spectra + 1, dtype=np.int64)
    sources = S.sources(n_spectra, seed=1)
    sources = sources.append_column("pk", pa.array(pks)).append_column("created", created)
    spectra = pa.table(
        {
            "pk": pks,
            "source_pk": pks,
            "spectrum_pk": pks + 10_000_000,
            "release": ["sdss5"] * n_spectra,
            "apred": ["1.4"] * n_spectra,
            "apstar": ["stars"] * n_spectra,
            "telescope": ["apo25m"] * n_spectra,
            "obj": [f"2M{i:010d}" for i in pks],
            "created": created,
        }
    )
    results = []
    for k, version in enumerate(VERSIONS):
        part = S.results("aspcap", pks + 10_000_000, v_astra=version, seed=k)
        extra = {"task_pk": pks + k * n_spectra, "source_pk": pks, "created": created}
        for name, values in extra.items():
            part = part.append_column(name, pa.array(values))
        results.append(part)
    return {"source": sources, "apogee_coadded_spectrum_in_ap_star": spectra, "aspcap": pa.concat_tables(results)}


def _load(dsn: str, tables: dict[str, pa.Table]) -> None:
    import adbc_driver_postgresql.dbapi as adbc

    with adbc.connect(dsn, autocommit=True) as con, con.cursor() as cur:
        for name, tbl in tables.items():
            cur.adbc_ingest(name, tbl, mode="create")  # binary COPY
            cur.execute(f"ALTER TABLE {name} ADD PRIMARY KEY ({'task_pk' if name == 'aspcap' else 'pk'})")
            cur.execute(f"VACUUM ANALYZE {name}")


def run(workdir: Path, n_results: int) -> list[str]:
    server = _server()
    if server is None:
        return ["PostgreSQL is not installed: import benchmark skipped"]
    dsn, stop = server
    try:
        return _measure(workdir, dsn, n_results)
    finally:
        stop()


def _measure(workdir: Path, dsn: str, n_results: int, rounds: int = 3) -> list[str]:
    import adbc_driver_postgresql.dbapi as adbc
    import psycopg

    tables = astra_tables(n_results // len(VERSIONS))
    n = tables["aspcap"].num_rows
    width = tables["aspcap"].num_columns
    _load(dsn, tables)
    del tables
    base = Lake.init(workdir / "lake_import")
    t = time.perf_counter()
    setup = base.import_postgres(dsn, ["source", "apogee_star"])
    setup_s = time.perf_counter() - t
    times: dict[str, list[float]] = {k: [] for k in ("copy", "copy_null", "adbc", "import")}
    with psycopg.connect(dsn, autocommit=True) as con:
        for r in range(rounds):  # in turns, so that the shared machine's load hits every path alike
            t = time.perf_counter()
            with con.cursor() as cur, cur.copy("COPY aspcap TO STDOUT (FORMAT binary)") as copy:
                for _ in copy:
                    pass
            times["copy"].append(time.perf_counter() - t)
            t = time.perf_counter()
            con.execute("COPY aspcap TO '/dev/null' (FORMAT binary)")
            times["copy_null"].append(time.perf_counter() - t)
            t = time.perf_counter()
            with adbc.connect(dsn) as c, c.cursor() as cur:
                cur.execute("SELECT * FROM aspcap ORDER BY task_pk")
                for _ in cur.fetch_record_batch():
                    pass
            times["adbc"].append(time.perf_counter() - t)
            lake = Lake(shutil.copytree(base.path, workdir / f"lake_import_{r}"))
            t = time.perf_counter()
            lake.import_postgres(dsn, ["aspcap"])
            times["import"].append(time.perf_counter() - t)
    t = time.perf_counter()
    lake.import_postgres(dsn, ["aspcap"])
    reimport_s = time.perf_counter() - t
    copy_s, copy_null_s, adbc_s, import_s = (statistics.median(times[k]) for k in ("copy", "copy_null", "adbc", "import"))

    def row(what: str, seconds: float, rows: int = n) -> str:
        return f"| {what} | {rows:,} | {seconds:.2f} s | {rows / seconds:,.0f} | {copy_s / seconds * rows / n:.3f}x |"

    return [
        f"ASPCAP table in PostgreSQL 15: {n:,} rows x {width} columns; {n // len(VERSIONS):,} sources and spectra. "
        f"Medians of {rounds} rounds run in turns (one run for the last two rows). Ratio: rows/s relative to "
        "`COPY aspcap TO STDOUT (FORMAT binary)` read by a client (psycopg).",
        "",
        "| path | rows | time | rows/s | vs COPY TO |",
        "|---|---:|---:|---:|---:|",
        row("PostgreSQL `COPY aspcap TO STDOUT (FORMAT binary)`, read by a client (psycopg)", copy_s),
        row("PostgreSQL `COPY aspcap TO '/dev/null' (FORMAT binary)` (server only)", copy_null_s),
        row("ADBC stream to Arrow batches, `ORDER BY task_pk` (the import's reader alone)", adbc_s),
        row("`import-postgres --tables aspcap` into the lake (read + map + upsert)", import_s),
        row("same again: every row replaced (idempotent re-import, one run)", reimport_s),
        row("set-up: `import-postgres --tables source,apogee_star` (one run)", setup_s, sum(setup.rows.values())),
    ]
