"""``astra-lake ingest``: walk folders, read files in parallel, write the lake in batches.

Per batch of files: sources are upserted by ``source_key``, spectra get their ``source_pk`` and are
upserted by their natural key, results get their ``spectrum_pk`` and are upserted by
``(spectrum_pk, v_astra major.minor)``; then the files are recorded in ``ingest_files``. A file whose
path, size and content are unchanged is skipped, so re-ingesting adds nothing. A file that fails is
recorded in ``ingest_errors`` with a one-line reason and contributes nothing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from astra_lake.errors import IngestError
from astra_lake.ingest.extract import SOURCE_REF, SPECTRUM_REF, Extracted, rows_to_arrow
from astra_lake.ingest.reader import FileId, file_id, read_file
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.writer import Writer, parquet_scan

SUFFIXES = (".fits", ".fits.gz", ".fit", ".fts")


@dataclass
class Summary:
    """What an ingest run did."""

    read: int = 0
    skipped: int = 0
    failed: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def add_rows(self, counts: dict[str, int]) -> None:
        for t, n in counts.items():
            self.rows[t] = self.rows.get(t, 0) + n


def find_files(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """FITS files under the given files/folders, sorted, absolute."""
    out: list[str] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += [str(f.resolve()) for f in sorted(p.rglob("*")) if f.is_file() and f.name.lower().endswith(SUFFIXES)]
        elif p.exists():
            out.append(str(p.resolve()))
        else:
            raise IngestError(f"{p}: no such file or directory")
    return sorted(dict.fromkeys(out))


def _work(args: tuple[str, str | None]) -> tuple[FileId | None, Extracted | None, str | None, str]:
    path, fmt = args
    try:
        fid = file_id(path)
    except OSError as exc:
        return None, None, f"{path}: cannot read file: {exc}", fmt or "unknown"
    try:
        return fid, read_file(path, fmt), None, fmt or "unknown"
    except IngestError as exc:
        return fid, None, str(exc), exc.format_guess


class Ingestor:
    """Reads files and writes what they contain into one lake."""

    def __init__(self, catalog: Catalog, *, fmt: str | None = None, workers: int = 1, batch_files: int = 64) -> None:
        self.catalog = catalog
        self.fmt = fmt
        self.workers = max(1, workers)
        self.batch_files = batch_files

    def known_files(self) -> dict[str, tuple[int, float, str]]:
        store = self.catalog.store("ingest_files")
        paths = store.paths()
        if not paths:
            return {}
        rows = self.catalog.duck().execute(f"SELECT path, size, mtime, sha256 FROM {parquet_scan(paths)}").fetchall()
        return {p: (s, m, h) for p, s, m, h in rows}

    def run(self, files: list[str], progress: Callable[[int, int], None] | None = None) -> Summary:
        summary = Summary()
        t0 = time.perf_counter()
        known = self.known_files()
        todo = []
        for path in files:
            st = os.stat(path) if os.path.exists(path) else None
            if st is not None and path in known and known[path][:2] == (st.st_size, st.st_mtime):
                summary.skipped += 1
                if progress:
                    progress(1, 0)
            else:
                todo.append(path)
        batch: list[tuple[FileId, Extracted]] = []
        failures: list[tuple[str, str, str]] = []
        for fid, ext, err, guess in self._read_all(todo):
            if err is not None or ext is None or fid is None:
                summary.failed += 1
                summary.errors.append(err or "unknown error")
                failures.append(((fid.path if fid else err.split(":")[0]) if err else "", guess, err or ""))
            elif fid.path in known and known[fid.path][2] == fid.sha256:
                summary.skipped += 1  # touched but unchanged content
                batch.append((fid, Extracted(fid.path, ext.format)))
            else:
                batch.append((fid, ext))
                summary.read += 1
            if progress:
                progress(1, sum(n for t, n in (ext.counts.items() if ext else []) if t != "source"))
            if len(batch) >= self.batch_files:
                self._flush(batch, failures, summary)
                batch, failures = [], []
        self._flush(batch, failures, summary)
        summary.seconds = time.perf_counter() - t0
        return summary

    def _read_all(self, files: list[str]) -> Iterator[tuple[FileId | None, Extracted | None, str | None, str]]:
        args = [(f, self.fmt) for f in files]
        if self.workers == 1 or len(files) < 2:
            yield from map(_work, args)
            return
        with ProcessPoolExecutor(self.workers) as pool:
            yield from pool.map(_work, args, chunksize=4)

    # -- writing one batch ---------------------------------------------------------------------
    def _flush(self, batch: list[tuple[FileId, Extracted]], failures: list[tuple[str, str, str]], summary: Summary) -> None:
        if not batch and not failures:
            return
        with self.catalog.writing():
            writer = Writer(self.catalog)
            touched: set[str] = set()
            tables: dict[str, list[dict[str, Any]]] = {}
            for _, ext in batch:
                for t, rows in ext.tables.items():
                    tables.setdefault(t, []).extend(rows)
            if tables.get("source"):
                writer.upsert("source", rows_to_arrow("source", tables.pop("source")))
                touched.add("source")
            schema = self.catalog.schema
            for t in [t for t in tables if schema.table(t).kind == "spectrum"]:
                rows = self._link_sources(rows_to_arrow(t, tables.pop(t)))
                writer.upsert(t, rows)
                touched.add(t)
            for t in sorted(tables, key=lambda t: schema.table(t).kind == "pixel"):  # results before their models
                rows = self._link_spectra(rows_to_arrow(t, tables.pop(t)))
                if schema.table(t).kind == "pixel":
                    rows = self._link_results(rows)
                writer.upsert(t, rows)
                touched.add(t)
            for _, ext in batch:
                summary.add_rows(ext.counts)
            if batch:
                record = [
                    {
                        "path": f.path,
                        "size": f.size,
                        "mtime": f.mtime,
                        "sha256": f.sha256,
                        "format": e.format,
                        "rows": json.dumps(e.counts),
                    }
                    for f, e in batch
                ]
                writer.upsert("ingest_files", rows_to_arrow("ingest_files", record))
                touched.add("ingest_files")
            if failures:
                attempts = self._attempts([p for p, _, _ in failures])
                errs = [{"path": p, "format": g, "error": e, "attempt": attempts[p]} for p, g, e in failures]
                writer.upsert("ingest_errors", rows_to_arrow("ingest_errors", errs))
                touched.add("ingest_errors")
            for t in touched:
                write_sidecars(self.catalog.store(t))

    def _attempts(self, paths: list[str]) -> dict[str, int]:
        store = self.catalog.store("ingest_errors")
        files = store.paths()
        prev: dict[str, int] = {}
        if files:
            for p, n in (
                self.catalog.duck().execute(f"SELECT path, max(attempt) FROM {parquet_scan(files)} GROUP BY path").fetchall()
            ):
                prev[p] = n
        return {p: prev.get(p, 0) + 1 for p in paths}

    def _link_sources(self, rows: pa.Table) -> pa.Table:
        """Replace the ``_source_key`` reference by the lake's ``source_pk``."""
        store = self.catalog.store("source")
        paths = store.paths()
        con = self.catalog.duck()
        con.register("incoming", rows)
        q = (
            f"SELECT i.* EXCLUDE ({SOURCE_REF}, source_pk), s.source_pk FROM incoming i "
            f"LEFT JOIN {parquet_scan(paths, 'source_key, source_pk')} s ON i.{SOURCE_REF} = s.source_key"
        )
        if "source_pk" not in rows.column_names:
            q = q.replace(", source_pk)", ")")
        return con.sql(q).to_arrow_table()

    def _link_spectra(self, rows: pa.Table) -> pa.Table:
        """Replace ``_spectrum_ref`` + ``_sk_*`` natural-key columns by the lake's ``spectrum_pk``."""
        if SPECTRUM_REF not in rows.column_names:
            return rows
        out = []
        for spectrum_table in set(rows.column(SPECTRUM_REF).to_pylist()):
            part = rows.filter(pa.compute.equal(rows.column(SPECTRUM_REF), spectrum_table))
            key = self.catalog.schema.table(spectrum_table).upsert_key
            store = self.catalog.store(spectrum_table)
            con = self.catalog.duck()
            con.register("incoming", part)
            on = " AND ".join(f"i._sk_{k} IS NOT DISTINCT FROM s.{k}" for k in key)
            sk = [c for c in part.column_names if c.startswith("_sk_")]  # every spectrum table's key columns
            refs = ", ".join([SPECTRUM_REF, *sk] + (["spectrum_pk"] if "spectrum_pk" in part.column_names else []))
            scan = parquet_scan(store.paths(), ", ".join(["spectrum_pk", *key]))
            out.append(
                con.sql(f"SELECT i.* EXCLUDE ({refs}), s.spectrum_pk FROM incoming i LEFT JOIN {scan} s ON {on}").to_arrow_table()
            )
        return pa.concat_tables(out, promote_options="default")

    def _link_results(self, rows: pa.Table) -> pa.Table:
        """Give model rows the task_pk of their result: the row of table ``pipeline`` for the same
        spectrum and v_astra major.minor (written earlier in the same batch)."""
        out = []
        for pipeline in set(rows.column("pipeline").to_pylist()):
            part = rows.filter(pa.compute.equal(rows.column("pipeline"), pipeline))
            store = self.catalog.store(pipeline)
            con = self.catalog.duck()
            con.register("incoming", part)
            scan = parquet_scan(store.paths(), "spectrum_pk, v_astra_major_minor, task_pk")
            linked = con.sql(
                f"SELECT i.*, r.task_pk FROM incoming i LEFT JOIN {scan} r "
                "ON r.spectrum_pk = i.spectrum_pk AND r.v_astra_major_minor = i.v_astra // 1000"
            ).to_arrow_table()
            missing = linked.filter(pa.compute.is_null(linked.column("task_pk")))
            if missing.num_rows:
                raise IngestError(
                    f"{pipeline} model for spectrum_pk {missing.column('spectrum_pk')[0].as_py()} has no {pipeline} result"
                )
            out.append(linked)
        return pa.concat_tables(out)
