"""``astra-lake ingest``: walk folders, read files in parallel, write the lake in batches.

Per batch of files: sources are upserted by ``source_key``, spectra get their ``source_pk`` and are
upserted by their natural key, results get their ``spectrum_pk`` and are upserted by
``(spectrum_pk, v_astra major.minor)``; then the files are recorded in ``ingest_files``. A file whose
path, size and content are unchanged is skipped, so re-ingesting adds nothing.

A failure stays inside its file. Whatever goes wrong reading a file, or writing its rows (a value
outside its range, an identity that contradicts the lake), becomes one ``ingest_errors`` row naming the
file, HDU, row and column, and nothing of that file is written: a batch's tables are staged and
committed only when every table of the batch was written (:mod:`astra_lake.ingest.staging`); a file
that makes a table fail is taken out and the batch staged again. Summary files (astraAll*, mwmAll*)
stream into the lake column by column, each file a batch of its own; they add the spectra the lake
does not hold yet (a stored spectrum, with the pixels of its own file, is kept as it is). Reduction-
pipeline summaries (spAll, allStar, allVisit, mwmTargets; :mod:`astra_lake.ingest.drp`) are a batch each
too: they update the metadata of the sources and spectra the lake holds and insert the others.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astra_lake.errors import IngestError, ValidationError
from astra_lake.ingest.drp import DrpFile, ingest_drp
from astra_lake.ingest.extract import SOURCE_REF, SPECTRUM_REF, Extracted, rows_to_arrow
from astra_lake.ingest.inputs import Problem, find_files, scan_inputs
from astra_lake.ingest.reader import FileId, file_id, read_file
from astra_lake.ingest.staging import StagingWriter
from astra_lake.ingest.summary import SummaryFile, parts
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.conform import storage_schema
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.writer import Counts, parquet_scan

__all__ = ["Failure", "Ingestor", "Summary", "find_files", "scan_inputs"]

RECORDS = ("ingest_files", "ingest_errors")  # bookkeeping tables, not counted as rows ingested


@dataclass(frozen=True)
class Failure:
    """Why a file was not ingested, and where in it (HDU, row within that HDU, column) when known."""

    path: str
    format: str
    error: str
    hdu: int | None = None
    row: int | None = None
    column: str | None = None

    @classmethod
    def of(cls, path: str, fmt: str, exc: Exception, hdu: int | None = None, row: int | None = None) -> Failure:
        """A one-line failure from a reader or writer error; ``hdu``/``row`` locate a writer's row."""
        if isinstance(exc, IngestError):
            hdu, row = exc.hdu if exc.hdu is not None else hdu, exc.row if exc.row is not None else row
        column = getattr(exc, "column", None)
        if isinstance(exc, ValidationError) and exc.row is not None and row is not None:
            exc = exc.renumbered(row)
        text = " ".join(str(exc).split())
        where = ", ".join(
            part for part in (f"HDU {hdu}" if hdu is not None else "", f"row {row}" if row is not None else "") if part
        )
        if not text.startswith(path):
            text = f"{path}: {where + ': ' if where else ''}{text}"
        return cls(path, fmt, text, hdu, row, column)


@dataclass
class Summary:
    """What an ingest run did. ``rows`` counts rows stored per table; ``offered`` rows the files gave
    (more where rows with the same key replaced each other within a batch)."""

    read: int = 0
    skipped: int = 0
    failed: int = 0
    rows: dict[str, int] = field(default_factory=dict)
    offered: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # what each DRP summary file updated, inserted, left out

    def add(self, counts: dict[str, Counts]) -> None:
        for t, c in counts.items():
            if t not in RECORDS:
                self.rows[t] = self.rows.get(t, 0) + c.stored
                self.offered[t] = self.offered.get(t, 0) + c.offered

    @property
    def replaced(self) -> dict[str, int]:
        """Rows per table that a later row with the same key replaced within a batch."""
        return {t: self.offered[t] - n for t, n in self.rows.items() if self.offered.get(t, n) > n}

    def fail(self, failure: Failure) -> None:
        self.failed += 1
        self.errors.append(failure.error)


Read = tuple[FileId | None, Extracted | SummaryFile | DrpFile | None, Failure | None]


def _work(args: tuple[str, str | None]) -> Read:
    path, fmt = args
    try:
        fid = file_id(path)
    except (OSError, IngestError) as exc:
        return None, None, Failure.of(path, fmt or "unknown", exc)
    try:
        return fid, read_file(path, fmt), None
    except IngestError as exc:
        return fid, None, Failure.of(path, exc.format_guess, exc)


def _die_with_parent(parent: int) -> None:
    """Worker initializer: end this reader when the ingest process ends, even by SIGKILL (Linux asks the
    kernel; elsewhere a thread notices that the parent is gone within a second)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError, TypeError):
        pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)

    if os.getppid() != parent:
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


@dataclass
class _Rows:
    """One table's rows of a batch of files, and which file each run of rows came from."""

    table: str
    data: pa.Table
    spans: list[tuple[int, int, int]]  # (file index in the batch, first row, rows)

    def locate(self, row: int) -> tuple[int, int]:
        """(file index, row within that file's rows of this table)."""
        for index, first, n in self.spans:
            if first <= row < first + n:
                return index, row - first
        raise LookupError(row)


class _FileFailed(Exception):
    def __init__(self, index: int, failure: Failure) -> None:
        super().__init__(failure.error)
        self.index, self.failure = index, failure


class Ingestor:
    """Reads files and writes what they contain into one lake."""

    def __init__(
        self, catalog: Catalog, *, fmt: str | None = None, workers: int = 1, batch_files: int = 64, client: Any = None
    ) -> None:
        self.catalog = catalog
        self.fmt = fmt
        self.workers = max(1, workers)
        self.batch_files = batch_files
        self.client = client  # a distributed.Client: its workers read and conform the files; this process writes

    def known_files(self) -> dict[str, tuple[int, float, str]]:
        store = self.catalog.store("ingest_files")
        paths = store.paths()
        if not paths:
            return {}
        rows = self.catalog.duck().execute(f"SELECT path, size, mtime, sha256 FROM {parquet_scan(paths)}").fetchall()
        return {p: (s, m, h) for p, s, m, h in rows}

    def run(
        self, files: list[str], progress: Callable[[int, int], None] | None = None, *, problems: list[Problem] | None = None
    ) -> Summary:
        """Ingest ``files``; ``problems`` (paths that could not be read, from :func:`scan_inputs`) are
        recorded as failures too."""
        summary = Summary()
        t0 = time.perf_counter()
        failures = [Failure(p.path, "unknown", f"{p.path}: {p.reason}") for p in problems or []]
        for f in failures:
            summary.fail(f)
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
        for fid, content, failure in self._read_all(todo):
            if failure is not None or content is None or fid is None:
                failure = failure or Failure("?", "unknown", "unknown error")
                summary.fail(failure)
                failures.append(failure)
            elif fid.path in known and known[fid.path][2] == fid.sha256:
                summary.skipped += 1  # touched but unchanged content
                batch.append((fid, Extracted(fid.path, content.format)))
            elif isinstance(content, SummaryFile | DrpFile):
                if isinstance(content, SummaryFile):
                    failure = self._summary_file(fid, content, summary)
                else:
                    failure = self._drp_file(fid, content, summary)
                if failure is not None:
                    summary.fail(failure)
                    failures.append(failure)
            else:
                batch.append((fid, content))
                summary.read += 1
            if progress:
                progress(
                    1, sum(n for t, n in (content.counts.items() if isinstance(content, Extracted) else []) if t != "source")
                )
            if len(batch) >= self.batch_files:
                self._flush(batch, failures, summary)
                batch, failures = [], []
        self._flush(batch, failures, summary)
        summary.seconds = time.perf_counter() - t0
        return summary

    def _read_all(self, files: list[str]) -> Iterator[Read]:
        args = [(f, self.fmt) for f in files]
        if self.client is not None:
            from astra_lake.pipelines.distributed import processed

            yield from processed(self.client, _work, ((a,) for a in args))
            return
        if self.workers == 1 or len(files) < 2:
            yield from map(_work, args)
            return
        # spawn, not fork: forking a process that runs DuckDB / Arrow / numba threads can crash the child
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(self.workers, mp_context=spawn, initializer=_die_with_parent, initargs=(os.getpid(),)) as pool:
            yield from pool.map(_work, args, chunksize=4)

    # -- per-spectrum files: a batch of files, staged together ----------------------------------
    def _flush(self, batch: list[tuple[FileId, Extracted]], failures: list[Failure], summary: Summary) -> None:
        """Write a batch of files and the failures so far. A file whose rows fail is taken out and the
        rest staged again; a failure no row ties to one file is found by writing the files one by one."""
        batch = list(batch)
        while batch or failures:
            try:
                self._commit_batch(batch, failures, summary)
                return
            except _FileFailed as exc:
                batch.pop(exc.index)
                failure = exc.failure
            except (ValidationError, IngestError) as exc:
                if len(batch) > 1:
                    for item in batch[1:]:
                        self._flush([item], [], summary)
                    del batch[1:]
                    continue
                fid, ext = batch.pop()
                failure = Failure.of(fid.path, ext.format, exc)
            summary.read -= 1
            summary.fail(failure)
            failures.append(failure)

    def _commit_batch(self, batch: list[tuple[FileId, Extracted]], failures: list[Failure], summary: Summary) -> None:
        with self._staged(summary) as stage:
            self._stage(stage, batch)
            self._record(stage, [(f, e.format, e.counts) for f, e in batch], failures)

    @contextmanager
    def _staged(self, summary: Summary) -> Iterator[StagingWriter]:
        """A staging writer under the writer lock: its tables commit when the block ends (and the run's
        counts grow), and are discarded, never visible, when it raises."""
        with self.catalog.writing():
            stage = StagingWriter(self.catalog)
            try:
                yield stage
                touched = stage.commit()
            except BaseException:
                stage.discard()
                raise
            for t in touched:
                write_sidecars(self.catalog.store(t))
        summary.add(stage.counts)

    def _record(self, stage: StagingWriter, files: list[tuple[FileId, str, dict[str, int]]], failures: list[Failure]) -> None:
        """``ingest_files`` rows (file, format, rows per table) and ``ingest_errors`` rows, staged."""
        if files:
            record = [
                {"path": f.path, "size": f.size, "mtime": f.mtime, "sha256": f.sha256, "format": fmt, "rows": json.dumps(counts)}
                for f, fmt, counts in files
            ]
            stage.upsert("ingest_files", rows_to_arrow("ingest_files", record))
        if failures:
            attempts = self._attempts([f.path for f in failures])
            rows = [
                {
                    "path": f.path,
                    "format": f.format,
                    "error": f.error,
                    "attempt": attempts[f.path],
                    "hdu": f.hdu,
                    "hdu_row": f.row,
                    "column_name": f.column,
                }
                for f in failures
            ]
            stage.upsert("ingest_errors", rows_to_arrow("ingest_errors", rows))

    def _stage(self, stage: StagingWriter, batch: list[tuple[FileId, Extracted]]) -> None:
        """Sources, then spectra, then results, then model spectra of every file in the batch."""
        schema = self.catalog.schema
        tables = [t for t in dict.fromkeys(t for _, e in batch for t in e.arrays) if t in schema.tables]
        order = {"source": 0, "spectrum": 1, "pipeline": 2, "pixel": 3}
        for t in sorted(tables, key=lambda t: order[schema.table(t).kind]):
            rows = self._rows(batch, t)
            kind = schema.table(t).kind
            try:
                data = rows.data
                if kind == "spectrum":
                    data = self._link_sources(stage, data)
                elif kind in ("pipeline", "pixel"):
                    data = self._link_spectra(stage, data)
                    if kind == "pixel":
                        data = self._link_results(stage, data)
                stage.upsert(t, data.drop_columns(["_order"]))
            except (ValidationError, IngestError) as exc:
                raise self._blame(batch, rows, exc) from None

    @staticmethod
    def _rows(batch: list[tuple[FileId, Extracted]], table: str) -> _Rows:
        parts, spans, first = [], [], 0
        for index, (_, ext) in enumerate(batch):
            if table in ext.arrays and ext.arrays[table].num_rows:
                part = ext.arrays[table]
                parts.append(part)
                spans.append((index, first, part.num_rows))
                first += part.num_rows
        data = pa.concat_tables(parts, promote_options="default")
        return _Rows(table, data.append_column("_order", pa.array(np.arange(data.num_rows))), spans)

    @staticmethod
    def _blame(batch: list[tuple[FileId, Extracted]], rows: _Rows, exc: Exception) -> Exception:
        """The file a table's failure belongs to, located to its HDU and row (or the error as it is
        when no row says which file: then the batch is retried file by file)."""
        row = getattr(exc, "row", None)
        if row is None:
            if len(rows.spans) == 1:
                index = rows.spans[0][0]
                fid, ext = batch[index]
                return _FileFailed(index, Failure.of(fid.path, ext.format, exc))
            return exc
        index, local = rows.locate(row)
        fid, ext = batch[index]
        hdu, hdu_row = ext.origin(rows.table, local)
        return _FileFailed(index, Failure.of(fid.path, ext.format, exc, hdu, hdu_row))

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

    def _link_sources(self, stage: StagingWriter, rows: pa.Table) -> pa.Table:
        """Replace the ``_source_key`` reference by the lake's ``source_pk`` (row order kept)."""
        con = self.catalog.duck()
        con.register("incoming", rows)
        drop = ", ".join([SOURCE_REF] + (["source_pk"] if "source_pk" in rows.column_names else []))
        return con.sql(
            f"SELECT i.* EXCLUDE ({drop}), s.source_pk FROM incoming i "
            f"LEFT JOIN {parquet_scan(stage._paths('source'), 'source_key, source_pk')} s ON i.{SOURCE_REF} = s.source_key "
            "ORDER BY i._order"
        ).to_arrow_table()

    def _link_spectra(self, stage: StagingWriter, rows: pa.Table) -> pa.Table:
        """Replace ``_spectrum_ref`` + ``_sk_*`` natural-key columns by the lake's ``spectrum_pk``."""
        if SPECTRUM_REF not in rows.column_names:
            return rows
        out = []
        for spectrum_table in set(rows.column(SPECTRUM_REF).to_pylist()):
            part = rows.filter(pc.equal(rows.column(SPECTRUM_REF), spectrum_table))
            key = self.catalog.schema.table(spectrum_table).upsert_key
            con = self.catalog.duck()
            con.register("incoming", part)
            on = " AND ".join(f"i._sk_{k} IS NOT DISTINCT FROM s.{k}" for k in key)
            sk = [c for c in part.column_names if c.startswith("_sk_")]  # every spectrum table's key columns
            refs = ", ".join([SPECTRUM_REF, *sk] + (["spectrum_pk"] if "spectrum_pk" in part.column_names else []))
            scan = parquet_scan(stage._paths(spectrum_table), ", ".join(["spectrum_pk", *key]))
            out.append(
                con.sql(f"SELECT i.* EXCLUDE ({refs}), s.spectrum_pk FROM incoming i LEFT JOIN {scan} s ON {on}").to_arrow_table()
            )
        linked = pa.concat_tables(out, promote_options="default")
        return linked.take(pc.sort_indices(linked.column("_order")))

    def _link_results(self, stage: StagingWriter, rows: pa.Table) -> pa.Table:
        """Give model rows the task_pk of their result: the row of table ``pipeline`` for the same
        spectrum and v_astra major.minor (staged earlier in the same batch)."""
        out = []
        for pipeline in set(rows.column("pipeline").to_pylist()):
            part = rows.filter(pc.equal(rows.column("pipeline"), pipeline))
            con = self.catalog.duck()
            con.register("incoming", part)
            scan = parquet_scan(stage._paths(pipeline), "spectrum_pk, v_astra_major_minor, task_pk")
            linked = con.sql(
                f"SELECT i.*, r.task_pk FROM incoming i LEFT JOIN {scan} r "
                "ON r.spectrum_pk = i.spectrum_pk AND r.v_astra_major_minor = i.v_astra // 1000"
            ).to_arrow_table()
            missing = linked.filter(pc.is_null(linked.column("task_pk")))
            if missing.num_rows:
                row = int(missing.column("_order")[0].as_py())
                raise ValidationError(
                    f"{pipeline} model for spectrum_pk {missing.column('spectrum_pk')[0].as_py()} has no {pipeline} result",
                    table=pipeline,
                    column="task_pk",
                    row=row,
                )
            out.append(linked)
        linked = pa.concat_tables(out)
        return linked.take(pc.sort_indices(linked.column("_order")))

    # -- summary files: streamed, one file per batch ---------------------------------------------
    def _summary_file(self, fid: FileId, sf: SummaryFile, summary: Summary) -> Failure | None:
        """Stream a summary file into the lake (sources, spectra, results: one pass each over the file)."""
        where = _Where()
        try:
            with self._staged(summary) as stage:
                ids: dict[int, list[pa.Array]] = {h.index: [] for h in sf.hdus}
                stage.upsert("source", where.stream((h, p) for h in sf.hdus for p in _sources(sf, h, ids)))
                source_pk = {h.index: self._summary_pks(stage, "source", h, ids[h.index]) for h in sf.hdus}
                keys: dict[int, list[pa.Table]] = {h.index: [] for h in sf.hdus}
                for h in sf.hdus:
                    spectra = self._summary_spectra(sf, h, source_pk[h.index], keys[h.index])
                    stage.upsert(h.spectrum_table, where.stream((h, p) for p in spectra))
                if sf.pipeline is not None:
                    spectrum_pk = {h.index: self._summary_pks(stage, h.spectrum_table, h, keys[h.index]) for h in sf.hdus}
                    results = ((h, p) for h in sf.hdus for p in _results(sf, h, spectrum_pk[h.index]))
                    stage.upsert(sf.pipeline, where.stream(results))
                self._record(stage, [(fid, sf.format, {t: c.offered for t, c in stage.counts.items()})], [])
        except (ValidationError, IngestError) as exc:
            hdu, row = where.locate(getattr(exc, "row", None))
            return Failure.of(fid.path, sf.format, exc, hdu, row)
        summary.read += 1
        return None

    def _drp_file(self, fid: FileId, df: DrpFile, summary: Summary) -> Failure | None:
        """A reduction-pipeline summary (spAll, allStar, allVisit, mwmTargets) in one staged batch."""
        try:
            with self._staged(summary) as stage:
                report = ingest_drp(self.catalog, stage, df)
                self._record(stage, [(fid, df.format, report.counts())], [])
        except (ValidationError, IngestError) as exc:
            return Failure.of(fid.path, df.format, exc, 1)
        summary.read += 1
        summary.notes.append(report.line())
        return None

    def _summary_spectra(
        self, sf: SummaryFile, hdu: Any, source_pk: np.ndarray, keys: list[pa.Table]
    ) -> Iterator[tuple[np.ndarray, pa.Table]]:
        """Spectrum rows the lake does not hold yet, with their source_pk. A spectrum already stored (its
        apStar / spec file, with pixels) stays as it is: a summary row has no pixels to replace it with.
        Every row's natural key is kept (in ``keys``) to find its spectrum_pk afterwards."""
        tbl = self.catalog.schema.table(hdu.spectrum_table)
        schema = storage_schema(tbl)
        key = list(tbl.upsert_key)
        paths = self.catalog.store(tbl.name).paths()
        con = self.catalog.duck()
        if paths:
            con.register("stored", con.sql(f"SELECT {', '.join(key)} FROM {parquet_scan(paths)}").to_arrow_table())
        cond = " AND ".join(f"p.{k} IS NOT DISTINCT FROM s.{k}" for k in key)
        for start, rows in parts(sf, hdu, tbl.name):
            if "v_astra" in tbl.column_names and "v_astra" not in rows.column_names:
                rows = rows.append_column("v_astra", pa.array(np.full(rows.num_rows, sf.v_astra, np.int32)))
            for k in key:  # a key column the file lacks is null (as the writer would store it)
                if k not in rows.column_names:
                    rows = rows.append_column(k, pa.nulls(rows.num_rows, schema.field(k).type))
            rows = rows.append_column("source_pk", pa.array(source_pk[start : start + rows.num_rows]))
            keys.append(rows.select(key))
            at = np.arange(start, start + rows.num_rows)
            if paths:
                con.register("part", rows.select(key).append_column("_i", pa.array(np.arange(rows.num_rows))))
                known = con.sql(f"SELECT p._i FROM part p SEMI JOIN stored s ON {cond}").to_arrow_table().column(0).to_numpy()
                new = np.ones(rows.num_rows, bool)
                new[known] = False
                rows, at = rows.filter(pa.array(new)), at[new]
            yield at, rows

    def _summary_pks(self, stage: StagingWriter, table: str, hdu: Any, keys: list[Any]) -> np.ndarray:
        """The identity (source_pk / spectrum_pk) of every row of an HDU: one join of the HDU's keys
        with the staged table, not one per batch."""
        if table == "source":
            ids = pa.chunked_array(keys, pa.int64()) if keys else pa.chunked_array([], pa.int64())
            incoming = pa.table({"source_key": pc.binary_join_element_wise("sdss_id", pc.cast(ids, pa.string()), ":")})
            cond, ident, cols = "i.source_key = s.source_key", "source_pk", "source_key, source_pk"
        else:
            key = list(self.catalog.schema.table(table).upsert_key)
            incoming = pa.concat_tables(keys) if keys else pa.table({k: pa.array([]) for k in key})
            cond = " AND ".join(f"i.{k} IS NOT DISTINCT FROM s.{k}" for k in key)
            ident, cols = "spectrum_pk", ", ".join(["spectrum_pk", *key])
        con = self.catalog.duck()
        con.register("incoming", incoming.append_column("_row", pa.array(np.arange(incoming.num_rows))))
        scan = parquet_scan(stage._paths(table), cols)
        found = con.sql(f"SELECT s.{ident} FROM incoming i LEFT JOIN {scan} s ON {cond} ORDER BY i._row").to_arrow_table()
        pks = found.column(0)
        if pks.null_count:  # cannot happen: the rows were just staged
            raise IngestError(f"{table}: {pks.null_count} staged rows not found again", hdu=hdu.index)
        return pks.to_numpy()


class _Where:
    """Which HDU and rows the rows of the current streamed write come from, to locate a failure."""

    def __init__(self) -> None:
        self.runs: list[tuple[int, int, np.ndarray]] = []  # (first row of the call, HDU, its rows in the HDU)

    def stream(self, parts: Iterator[tuple[Any, tuple[np.ndarray, pa.Table]]]) -> Iterator[pa.Table]:
        self.runs = []
        first = 0
        for hdu, (at, rows) in parts:
            self.runs.append((first, hdu.index, at))
            first += rows.num_rows
            yield rows

    def locate(self, row: int | None) -> tuple[int | None, int | None]:
        """(HDU, row within it) of a row of the current write; without a row, the HDU being written."""
        if row is None:
            return (self.runs[-1][1] if self.runs else None), None
        for first, hdu, at in self.runs:
            if first <= row < first + len(at):
                return hdu, int(at[row - first])
        return None, None


def _sources(sf: SummaryFile, hdu: Any, ids: dict[int, list[pa.Array]]) -> Iterator[tuple[np.ndarray, pa.Table]]:
    for start, rows in parts(sf, hdu, "source"):
        ids[hdu.index].extend(rows.column("sdss_id").cast(pa.int64()).chunks)
        yield np.arange(start, start + rows.num_rows), rows


def _results(sf: SummaryFile, hdu: Any, spectrum_pk: np.ndarray) -> Iterator[tuple[np.ndarray, pa.Table]]:
    assert sf.pipeline is not None
    for start, rows in parts(sf, hdu, sf.pipeline):
        rows = rows.drop_columns([c for c in ("v_astra",) if c in rows.column_names])
        rows = rows.append_column("v_astra", pa.array(np.full(rows.num_rows, sf.v_astra, np.int32)))
        rows = rows.append_column("spectrum_pk", pa.array(spectrum_pk[start : start + rows.num_rows]))
        yield np.arange(start, start + rows.num_rows), rows
