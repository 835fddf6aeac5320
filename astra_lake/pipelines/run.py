"""Run a pipeline over the lake (the engine of ``lake.run`` and ``astra-lake run``).

1. **Select** from one pinned snapshot: input rows the ``where`` clause picks, minus those that already
   have a result of this pipeline at the same ``v_astra`` major.minor that is newer than the input row
   (``input.modified > result.modified`` means the input changed after the result, as upstream Astra
   decides; the lake's writer sets ``modified`` on every write). ``force`` redoes them all. Nothing
   selected: nothing is written.
2. **Process** block by block (numpy arrays from ``spectra_batches``), here or, given a
   ``distributed.Client``, on its workers (:mod:`astra_lake.pipelines.distributed`: same blocks, same
   results); exceptions are isolated per spectrum and become flagged result rows plus ``task_errors`` rows.
3. **Commit** every ``batch_rows`` results through the lake's writer, in this order: model spectra,
   errors, results. The result commit is the marker that a spectrum is done: a run killed at any point
   and started again redoes exactly the spectra without a committed result, and re-uses the ``task_pk``
   of a model row written before the kill, so no row is lost or duplicated.
4. **Record** the run in ``runs`` (started as ``running``, closed as ``finished`` or ``failed``) with
   counts, options, model file sha256 and the input snapshot's version; every row written carries its
   ``run_id``; ``t_elapsed`` / ``t_overhead`` follow :mod:`astra_lake.pipelines.timing`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import socket
import time
import traceback
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeRemainingColumn
from rich.text import Text

from astra_lake.lake.catalog import Catalog
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.writer import Writer, parquet_scan
from astra_lake.pipelines.framework import Block, Compilation, Output, Pipeline, PipelineError
from astra_lake.pipelines.timing import Timer
from astra_lake.query.batches import IDS, spectra_batches
from astra_lake.query.duck import connect
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.model import Table
from astra_lake.schema.versions import version_to_int

DEFAULT_V_ASTRA = importlib.metadata.version("astra-lake")
PROVENANCE = {"task_pk", "spectrum_pk", "source_pk", "sdss_id", "_healpix_29", "v_astra", "v_astra_major_minor"}
PROVENANCE |= {"created", "modified", "t_elapsed", "t_overhead", "tag", "run_id"}


@dataclass
class RunSummary:
    """What a run did (also the ``runs`` row); ``run_id`` is None when there was nothing to do."""

    pipeline: str
    run_id: int | None
    selected: int
    done: int = 0
    skipped: int = 0
    failed: int = 0
    wall_time: float = 0.0
    input_version: int = 0
    tables: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        if self.run_id is None:
            return (
                f"{self.pipeline}: nothing to do: {self.skipped} of {self.selected} selected input rows already have a "
                "result of this version, newer than the input (use force / --force to redo them); nothing was written"
            )
        rate = self.done / self.wall_time if self.wall_time else 0.0
        return (
            f"{self.pipeline} run {self.run_id}: {self.done} results ({self.failed} failed, see task_errors), "
            f"{self.skipped} skipped, in {self.wall_time:.1f} s ({rate:.1f}/s), input lake version {self.input_version}"
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _file_options(pipeline: Pipeline, opts: dict[str, Any]) -> dict[str, str]:
    """Make file options absolute (they must exist) and return their sha256 by option name."""
    hashes = {}
    for name in pipeline.files:
        if opts.get(name) is None:
            continue
        path = Path(opts[name]).expanduser().resolve()
        if not path.is_file():
            raise PipelineError(f"pipeline {pipeline.name}: option {name}: no such file {path}")
        opts[name] = str(path)
        hashes[name] = file_sha256(path)
    return hashes


def _sql(con: duckdb.DuckDBPyConnection, query: str, what: str) -> pa.Table:
    try:
        return con.sql(query).to_arrow_table()
    except duckdb.Error as exc:
        raise PipelineError(f"{what} failed: {str(exc).splitlines()[0]}") from None


def _newest_input(tbl: Table, columns: str, where: str | None) -> str:
    """SQL of the input rows (one per spectrum: a result table gives its newest row)."""
    cond = f" WHERE {where}" if where else ""
    if tbl.kind == "pipeline":
        order = "v_astra DESC, modified DESC"
        return f"SELECT {columns} FROM {tbl.name}{cond} QUALIFY row_number() OVER (PARTITION BY spectrum_pk ORDER BY {order}) = 1"
    return f"SELECT {columns} FROM {tbl.name}{cond}"


def select(
    con: duckdb.DuckDBPyConnection, tbl: Table, result: str, where: str | None, mm: int, force: bool
) -> tuple[np.ndarray, int]:
    """(spectrum_pk of the input rows to process, number of input rows selected)."""
    inner = _newest_input(tbl, "spectrum_pk, modified", where)
    done = f"SELECT spectrum_pk, max(modified) AS modified FROM {result} WHERE v_astra // 1000 = {mm} GROUP BY spectrum_pk"
    query = (
        f"SELECT i.spectrum_pk, r.modified IS NULL OR i.modified > r.modified AS todo FROM ({inner}) i "
        f"LEFT JOIN ({done}) r USING (spectrum_pk)"
    )
    rows = _sql(con, query, f"where clause on {tbl.name}" if where else f"selection from {tbl.name}")
    pks = rows.column("spectrum_pk").to_numpy()
    todo = np.ones(len(pks), dtype=bool) if force else rows.column("todo").to_numpy(zero_copy_only=False).astype(bool)
    return np.sort(pks[todo]), len(pks)


class TaskKeys:
    """task_pk of every spectrum to process: the existing result's (kept on replace), else that of a model
    row a killed run left without its result, else a new one from the lake's sequence."""

    def __init__(self, catalog: Catalog, con: duckdb.DuckDBPyConnection, pipeline: Pipeline, mm: int) -> None:
        self.catalog = catalog
        parts = [f"SELECT spectrum_pk, task_pk, 0 AS prio FROM {pipeline.name} WHERE v_astra // 1000 = {mm}"]
        if pipeline.model_table:
            parts.append(
                f"SELECT spectrum_pk, task_pk, 1 AS prio FROM {pipeline.model_table} "
                f"WHERE pipeline = '{pipeline.name}' AND v_astra // 1000 = {mm}"
            )
        first = "QUALIFY row_number() OVER (PARTITION BY spectrum_pk ORDER BY prio) = 1"
        q = f"SELECT spectrum_pk, task_pk FROM ({' UNION ALL '.join(parts)}) {first}"
        known = _sql(con, q, "task_pk lookup").sort_by("spectrum_pk")
        self.pks = known.column("spectrum_pk").to_numpy()
        self.tasks = known.column("task_pk").to_numpy()
        self.modelled = np.zeros(0, np.int64)  # task_pk with a stored model spectrum (sorted)
        if pipeline.model_table:
            q = f"SELECT DISTINCT task_pk FROM {pipeline.model_table} WHERE pipeline = '{pipeline.name}' ORDER BY task_pk"
            self.modelled = _sql(con, q, "model spectra lookup").column("task_pk").to_numpy()

    def have_model(self, task_pks: np.ndarray) -> np.ndarray:
        """Whether each task_pk has a model spectrum stored (a redone result that fails must blank it)."""
        return np.isin(task_pks, self.modelled, assume_unique=False)

    def of(self, spectrum_pk: np.ndarray) -> np.ndarray:
        out = np.zeros(len(spectrum_pk), dtype=np.int64)
        pos = np.clip(np.searchsorted(self.pks, spectrum_pk), 0, max(len(self.pks) - 1, 0))
        hit = (self.pks[pos] == spectrum_pk) if len(self.pks) else np.zeros(len(spectrum_pk), dtype=bool)
        out[hit] = self.tasks[pos[hit]]
        out[~hit] = self.catalog.sequences.reserve("task_pk", int((~hit).sum()))
        return out


def lookup(con: duckdb.DuckDBPyConnection, tbl: Table, pks: np.ndarray, pipeline: Pipeline) -> pa.Table | None:
    """The pipeline's ``lookup`` columns of the selected spectra of ``tbl`` (sorted by spectrum_pk)."""
    if not pipeline.lookup:
        return None
    con.register("_todo", pa.table({"spectrum_pk": pa.array(pks, pa.int64())}))
    query = pipeline.lookup.replace("{input}", tbl.name)
    rows = _sql(
        con, f"SELECT * FROM ({query}) SEMI JOIN _todo USING (spectrum_pk) ORDER BY spectrum_pk", f"{pipeline.name} lookup"
    )
    keys = rows.column("spectrum_pk").to_numpy() if "spectrum_pk" in rows.column_names else None
    if keys is None or (len(keys) > 1 and not np.all(np.diff(keys) > 0)):
        raise PipelineError(f"pipeline {pipeline.name}: its lookup must give one row per spectrum_pk")
    clash = sorted(set(rows.column_names[1:]) & {*IDS, *pipeline.columns, *tbl.column_names})
    if clash:
        raise PipelineError(f"pipeline {pipeline.name}: lookup column(s) {', '.join(clash)} are input columns already")
    return rows


def blocks(
    snapshot: Snapshot, con: duckdb.DuckDBPyConnection, tbl: Table, pks: np.ndarray, pipeline: Pipeline, batch_rows: int
) -> Iterator[Block]:
    """Input blocks of the selected rows: spectra through ``spectra_batches``, columns through DuckDB, each
    with the pipeline's ``lookup`` columns."""
    columns = list(dict.fromkeys([*IDS, *pipeline.columns]))
    extra = lookup(con, tbl, pks, pipeline)
    if tbl.kind == "spectrum":
        for spec in spectra_batches(snapshot, tbl.name, pks=pa.array(pks), columns=columns, batch_rows=batch_rows):
            yield Block(tbl.name, spec.meta, spec.wavelength, spec.flux, spec.ivar, spec.pixel_flags).joined(extra)
        return
    con.register("_todo", pa.table({"spectrum_pk": pa.array(pks, pa.int64())}))
    rows = _sql(
        con, f"SELECT * FROM ({_newest_input(tbl, ', '.join(columns), None)}) SEMI JOIN _todo USING (spectrum_pk)", "input read"
    )
    for start in range(0, rows.num_rows, batch_rows):
        yield Block(tbl.name, rows.slice(start, batch_rows)).joined(extra)


def concat(parts: list[Block]) -> Block:
    """One block of several blocks of the same table."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if first.flux is None:
        return Block(first.table, pa.concat_tables([p.meta for p in parts]))
    wave = first.wavelength
    if wave is not None and wave.ndim == 2:
        wave = np.concatenate([p.wavelength for p in parts if p.wavelength is not None])
    return Block(
        first.table,
        pa.concat_tables([p.meta for p in parts]),
        wave,
        *(np.concatenate([getattr(p, a) for p in parts]) for a in ("flux", "ivar", "pixel_flags")),
    )


def rebatch(source: Iterator[Block], size: int) -> Iterator[Block]:
    """Blocks of ``size`` rows (the last may be smaller) from blocks of any size (a selective read
    yields a few rows per file)."""
    pending: list[Block] = []
    held = 0
    for block in source:
        pending.append(block)
        held += len(block)
        while held >= size:
            whole = concat(pending)
            yield whole.take(np.arange(size))
            rest = whole.take(np.arange(size, len(whole)))
            pending, held = ([rest] if len(rest) else []), len(rest)
    if held:
        yield concat(pending)


@dataclass
class BlockResult:
    """A processed block: result columns, flag bits to OR in, failures, exceptions and model spectra."""

    columns: dict[str, pa.Array]
    flags: dict[str, np.ndarray]
    failed: dict[int, str]
    exceptions: dict[int, tuple[str, str]]
    model: dict[str, np.ndarray]


def _check_output(pipeline: Pipeline, result: Table, out: Output, n: int, model_npix: int | None) -> BlockResult:
    """Validate what a pipeline returned for n rows (one line naming the first problem)."""
    where = f"pipeline {pipeline.name}"
    cols: dict[str, pa.Array] = {}
    for name, values in out.columns.items():
        if name in PROVENANCE or name not in result.column_names:
            raise PipelineError(f"{where} returned column {name!r}, which {result.name} does not declare (or the runner fills)")
        arr = values if isinstance(values, pa.Array) else pa.array(np.asarray(values))
        if len(arr) != n:
            raise PipelineError(f"{where} returned {len(arr)} values of {name!r} for a block of {n}")
        cols[name] = arr
    flags = {}
    for name, values in out.flags.items():
        if name not in [fc.name for fc in result.flag_columns]:
            raise PipelineError(f"{where} returned flags for {name!r}, which is not a flag column of {result.name}")
        flags[name] = np.asarray(values, dtype=np.int64).reshape(n)
    model = {}
    for name in ("model_flux", "continuum"):
        arr = getattr(out, name)
        if arr is None:
            continue
        if model_npix is None:
            raise PipelineError(f"{where} returned {name} but declares no model_table")
        if np.shape(arr) != (n, model_npix):
            raise PipelineError(f"{where} returned {name} of shape {np.shape(arr)}, expected ({n}, {model_npix})")
        model[name] = np.asarray(arr, dtype=np.float32)
    failed = {int(i): str(msg) for i, msg in out.failed.items()}
    return BlockResult(cols, flags, failed, {}, model)


def _one_line(exc: BaseException) -> tuple[str, str]:
    text = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    return text, "".join(traceback.format_exception(exc)[-3:])


def process_block(
    pipeline: Pipeline, result: Table, block: Block, model: Any, opts: dict[str, Any], model_npix: int | None
) -> BlockResult:
    """Run the pipeline on a block; if it raises, again one row at a time so that only the rows that
    raise fail (their columns stay null, their model spectra NaN)."""
    try:
        return _check_output(pipeline, result, pipeline.process(block, model, opts), len(block), model_npix)
    except PipelineError:
        raise
    except Exception as exc:  # one bad spectrum must not stop the run
        if len(block) == 1:
            return BlockResult({}, {}, {}, {0: _one_line(exc)}, {})
    parts = [process_block(pipeline, result, block.take([i]), model, opts, model_npix) for i in range(len(block))]
    return _merge(parts, result, model_npix)


def _merge(parts: list[BlockResult], result: Table, model_npix: int | None) -> BlockResult:
    n = len(parts)
    cols = {}
    for c in dict.fromkeys(c for p in parts for c in p.columns):
        typ = next(p.columns[c].type for p in parts if c in p.columns)
        cols[c] = pa.concat_arrays([p.columns[c].cast(typ) if c in p.columns else pa.nulls(1, typ) for p in parts])
    flag_names = list(dict.fromkeys(f for p in parts for f in p.flags))
    flags = {f: np.concatenate([p.flags.get(f, np.zeros(1, np.int64)) for p in parts]) for f in flag_names}
    model = {}
    for name in dict.fromkeys(m for p in parts for m in p.model):
        assert model_npix is not None
        model[name] = np.concatenate([p.model.get(name, np.full((1, model_npix), np.nan, np.float32)) for p in parts])
    failed = {i: msg for i, p in enumerate(parts) for msg in p.failed.values()}
    exceptions = {i: e for i, p in enumerate(parts) for e in p.exceptions.values()}
    assert len(flags) == 0 or all(len(v) == n for v in flags.values())
    return BlockResult(cols, flags, failed, exceptions, model)


@contextmanager
def numba_threads(n: int) -> Iterator[None]:
    """Let numba kernels use ``n`` threads inside the block."""
    before = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(before)


class SpectraPerSecond(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed or (task.completed / task.elapsed if task.elapsed else 0.0)
        return Text(f"{speed:,.1f} spectra/s", style="progress.data.speed")


def progress_bar(enabled: bool) -> Progress:
    """A bar with spectra done / total, spectra per second and the time remaining."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), SpectraPerSecond(), TimeRemainingColumn())
    return Progress(*columns, disable=not enabled, transient=False)


@dataclass
class Context:
    """Everything fixed for one run."""

    catalog: Catalog
    pipeline: Pipeline
    result: Table
    run_id: int
    v_astra: int
    tag: str
    model_npix: int | None


class Batches:
    """Results, model rows and errors waiting to be committed, and their commit (in the crash-safe order)."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.results: list[pa.Table] = []
        self.models: list[pa.Table] = []
        self.errors: list[dict[str, Any]] = []
        self.pending = 0
        self.pending_failed = 0
        self.done = 0
        self.failed = 0  # of the committed results (as ``done``), so a stopped run's row counts what it wrote

    def add(
        self, block: Block, out: BlockResult, task_pks: np.ndarray, t_elapsed: float, modelled: np.ndarray | None = None
    ) -> None:
        """``modelled``: rows whose task_pk has a model spectrum stored; one of those that fails now gets a
        model row of NaN (of this run), so no model spectrum of an earlier input outlives its result."""
        ctx, n = self.ctx, len(block)
        ident = {c: block.meta.column(c) for c in ("spectrum_pk", "source_pk", "sdss_id", "_healpix_29")}
        common = {
            **ident,
            "v_astra": pa.array(np.full(n, ctx.v_astra, np.int32)),
            "task_pk": pa.array(task_pks),
            "run_id": pa.array(np.full(n, ctx.run_id, np.int64)),
            "tag": pa.array([ctx.tag] * n, pa.string()),
        }
        summary = ctx.result.summary_column
        flags = {name: values.copy() for name, values in out.flags.items()}
        if summary is not None:  # a result always has a summary flag value (0: no flag set), never null
            flags.setdefault(summary.name, np.zeros(n, np.int64))
        for name in [fc.name for fc in ctx.result.flag_columns if fc.name in out.columns]:  # given as a column too
            given = pc.fill_null(out.columns[name].cast(pa.int64()), 0).to_numpy()
            flags[name] = flags.get(name, np.zeros(n, np.int64)) | given
        bad = sorted(set(out.failed) | set(out.exceptions))
        if summary is not None and bad:
            col = flags.setdefault(summary.name, np.zeros(n, np.int64))
            fail = summary.latest.flag(ctx.pipeline.failure_flag)
            exc = summary.latest.flag(ctx.pipeline.exception_flag or ctx.pipeline.failure_flag)
            assert fail is not None and exc is not None
            for i in out.failed:
                col[i] |= fail.mask
            for i in out.exceptions:
                col[i] |= exc.mask
        cols = {**common, **out.columns, **{k: pa.array(v) for k, v in flags.items()}}
        cols["t_elapsed"] = pa.array(np.full(n, t_elapsed / max(n, 1)))
        self.results.append(pa.table(cols))
        good = np.ones(n, bool)
        good[bad] = False
        blank = np.zeros(n, bool) if modelled is None or ctx.pipeline.model_table is None else modelled & ~good
        if out.model or blank.any():
            ok = np.flatnonzero((good if out.model else False) | blank)
            npix = ctx.model_npix or 0
            names = list(out.model) or list(ctx.catalog.schema.table(ctx.pipeline.model_table or "").pixel_columns)
            model = {k: out.model[k][ok] if k in out.model else np.full((len(ok), npix), np.nan, np.float32) for k in names}
            for v in model.values():
                v[blank[ok]] = np.nan
            rows = {k: pc.take(v, pa.array(ok)) for k, v in common.items()}
            rows["pipeline"] = pa.array([ctx.pipeline.name] * len(ok), pa.string())
            for k, v in model.items():
                rows[k] = pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), npix)
            self.models.append(pa.table(rows))
        pk = ident["spectrum_pk"].to_numpy()
        for i, msg in sorted(out.failed.items()):
            self.errors.append(self._error(block, pk[i], ctx.pipeline.failure_flag, msg, ""))
        for i, (msg, tb) in sorted(out.exceptions.items()):
            self.errors.append(self._error(block, pk[i], ctx.pipeline.exception_flag or ctx.pipeline.failure_flag, msg, tb))
        self.pending += n
        self.pending_failed += len(bad)

    def _error(self, block: Block, spectrum_pk: int, flag: str, message: str, tb: str) -> dict[str, Any]:
        return {
            "run_id": self.ctx.run_id,
            "pipeline": self.ctx.pipeline.name,
            "spectrum_pk": int(spectrum_pk),
            "input_table": block.table,
            "flag": flag,
            "error": message,
            "traceback": tb,
        }

    def commit(self, timer: Timer) -> None:
        """Write what is pending (model rows, errors, then results) under the lake's writer lock."""
        if not self.pending:
            return
        ctx = self.ctx
        results = pa.concat_tables(self.results, promote_options="default")
        elapsed, mean = timer.add_overheads(results.column("t_elapsed").to_numpy())
        results = results.set_column(results.column_names.index("t_elapsed"), "t_elapsed", pa.array(elapsed))
        results = results.append_column("t_overhead", pa.array(np.full(results.num_rows, mean)))
        with ctx.catalog.writing():
            writer = Writer(ctx.catalog)
            if self.models and ctx.pipeline.model_table:
                writer.upsert(ctx.pipeline.model_table, pa.concat_tables(self.models))
            if self.errors:
                writer.upsert("task_errors", pa.Table.from_pylist(self.errors))
            writer.upsert(ctx.pipeline.name, results)
        self.done += self.pending
        self.failed += self.pending_failed
        self.results, self.models, self.errors, self.pending, self.pending_failed = [], [], [], 0, 0


@dataclass
class _Process:
    """How to process one block of a run (and the timer that attributes its time)."""

    pipeline: Pipeline
    result: Table
    model: Any
    opts: dict[str, Any]
    model_npix: int | None
    threads: int
    timer: Timer


def _processed(source: Iterator[Block], batch_rows: int, run: _Process) -> Iterator[tuple[Block, BlockResult, float]]:
    """(block, its result, its time) of each block, processed here; reading counts as overhead."""
    for block in rebatch(source, batch_rows):
        run.timer.overhead()
        out = process_block(run.pipeline, run.result, block, run.model, run.opts, run.model_npix)
        yield block, out, run.timer.results(len(block)) * run.threads


def _distributed(
    client: Any,
    snapshot: Snapshot,
    con: duckdb.DuckDBPyConnection,
    tbl: Table,
    pks: np.ndarray,
    batch_rows: int,
    run: _Process,
) -> Iterator[tuple[Block, BlockResult, float]]:
    """The same blocks processed on a Dask cluster: spectrum blocks as pieces of the snapshot's files
    (read by the workers), column inputs as their rows; the workers' read and load times are overhead."""
    from astra_lake.pipelines import distributed as D

    read = [c for c in dict.fromkeys([*IDS, *run.pipeline.columns, "spectrum_pk"]) if c not in tbl.pixel_columns]
    job = D.Job(run.pipeline, run.result, {tbl.name: tbl}, read, run.opts, run.model_npix, run.threads)
    if tbl.kind == "spectrum":  # column inputs are joined here, in blocks()
        job.lookup = lookup(con, tbl, pks, run.pipeline)
    D.remember_model(job, run.model)
    if tbl.kind == "spectrum":
        units: Iterator[D.Unit] = D.spectrum_units(tbl.name, snapshot.paths(tbl.name), pks, batch_rows)
    else:
        source = rebatch(blocks(snapshot, con, tbl, pks, run.pipeline, batch_rows), batch_rows)
        units = ((b.table, None, b.meta) for b in source)
    results = D.processed(client, D.run_unit, units, shared=job)
    timer = run.timer
    try:
        while True:
            with timer.paused():  # waiting for the workers is neither result time nor overhead
                done = next(results, None)
            if done is None:
                return
            timer.overhead()  # the coordinator's own bookkeeping
            timer.overheads += done.overhead  # the worker's read and model load
            timer.n_results += len(done.ident)
            yield Block(done.table, done.ident), done.out, done.elapsed
    finally:
        results.close()  # cancels the blocks still in flight


def _next_run_id(catalog: Catalog) -> int:
    """One more than the largest run_id (call under the writer lock: run rows are written under it)."""
    paths = catalog.store("runs").paths() if catalog.store("runs").exists() else []
    if not paths:
        return 1
    row = catalog.duck().execute(f"SELECT max(run_id) FROM {parquet_scan(paths, 'run_id')}").fetchone()
    return int(row[0] or 0) + 1 if row else 1


def _input_version(snapshot: Snapshot) -> tuple[int, str]:
    v = snapshot.version
    if v is None:
        return snapshot.catalog.version, ""
    if isinstance(v, str) and not v.isdigit():
        return int(snapshot.catalog.tags()[v]["lake_version"]), v
    return int(v), ""


def run_pipeline(
    catalog: Catalog,
    snapshot: Snapshot,
    pipeline: Pipeline | Compilation,
    *,
    tables: list[str] | None = None,
    where: str | None = None,
    v_astra: str | None = None,
    force: bool = False,
    workers: int | None = None,
    batch_rows: int = 256,
    tag: str = "",
    options: Mapping[str, Any] | None = None,
    progress: bool = False,
    client: Any = None,
) -> RunSummary:
    """Select, process, commit and record (see the module docstring); returns the run's summary.
    ``client``: a ``distributed.Client`` whose workers process the blocks (:mod:`.distributed`)."""
    if isinstance(pipeline, Compilation):  # one query over the lake (best)
        from astra_lake.pipelines.compilation import run_compilation

        return run_compilation(
            catalog, snapshot, pipeline, tables=tables, where=where, v_astra=v_astra, force=force, tag=tag, options=options
        )
    t0 = time.perf_counter()
    timer = Timer()
    schema = catalog.schema
    version = version_to_int(v_astra or pipeline.v_astra or DEFAULT_V_ASTRA)
    pipeline.check(schema, version)
    result = schema.table(pipeline.name)
    tables = list(tables or pipeline.inputs)
    foreign = [t for t in tables if t not in pipeline.inputs]
    if foreign:
        raise PipelineError(f"pipeline {pipeline.name} reads {', '.join(pipeline.inputs)}; not {', '.join(foreign)}")
    if batch_rows < 1:
        raise PipelineError(f"batch_rows must be >= 1, got {batch_rows}")
    opts = pipeline.resolve_options(options or {})
    hashes = _file_options(pipeline, opts)
    input_version, input_tag = _input_version(snapshot)
    con = connect(snapshot)
    todo, selected = {}, 0
    for t in tables:
        todo[t], n = select(con, schema.table(t), pipeline.name, where, version // 1000, force)
        selected += n
    summary = RunSummary(pipeline.name, None, selected, input_version=input_version, tables=tables)
    total = sum(len(v) for v in todo.values())
    summary.skipped = selected - total
    if total == 0:
        summary.wall_time = time.perf_counter() - t0
        return summary
    cores = 1 if client is not None else os.cpu_count() or 1  # on Dask: threads per block (a worker runs one per thread)
    threads = max(1, min(workers or cores, numba.config.NUMBA_NUM_THREADS))  # type: ignore[attr-defined]
    grid = schema.table(pipeline.model_table).grid if pipeline.model_table else None
    model_npix = grid.npix if grid is not None else None
    record = {
        "pipeline": pipeline.name,
        "pipeline_version": pipeline.version,
        "v_astra": version,
        "model_path": opts.get("model"),
        "model_sha256": hashes.get("model"),
        "options": json.dumps(
            {**{k: v for k, v in opts.items()}, **{f"{k}_sha256": h for k, h in hashes.items()}}
            | {"where": where, "tables": tables, "force": force, "tag": tag, "batch_rows": batch_rows}
            | ({"dask": client.scheduler.address} if client is not None else {}),
            sort_keys=True,
            default=str,
        ),
        "input_version": input_version,
        "input_tag": input_tag,
        "n_selected": selected,
        "n_skipped": summary.skipped,
        "workers": threads,
        "host": socket.gethostname(),
        "astra_lake_version": DEFAULT_V_ASTRA,
    }
    opts["workers"] = threads
    model = pipeline.load(opts)  # a model that cannot be loaded stops the run before anything is written
    run = _Process(pipeline, result, model, opts, model_npix, threads, timer)
    with timer.paused(), catalog.writing():
        run_id = _next_run_id(catalog)
        Writer(catalog).upsert("runs", pa.Table.from_pylist([{**record, "run_id": run_id, "status": "running"}]))
    summary.run_id = run_id
    ctx = Context(catalog, pipeline, result, run_id, version, tag, model_npix)
    batches = Batches(ctx)
    status, error = "failed", ""
    try:
        with numba_threads(threads), progress_bar(progress) as bar:
            keys = TaskKeys(catalog, con, pipeline, version // 1000)
            job = bar.add_task(f"{pipeline.name}", total=total)
            for t in tables:
                if client is None:
                    source = _processed(blocks(snapshot, con, schema.table(t), todo[t], pipeline, batch_rows), batch_rows, run)
                else:
                    source = _distributed(client, snapshot, con, schema.table(t), todo[t], batch_rows, run)
                for block, out, elapsed in source:
                    task_pks = keys.of(block.column("spectrum_pk"))
                    batches.add(block, out, task_pks, elapsed, keys.have_model(task_pks))
                    bar.advance(job, len(block))
                    if batches.pending >= batch_rows:
                        with timer.paused():
                            batches.commit(timer)
            timer.overhead()
            with timer.paused():
                batches.commit(timer)
        status = "finished"
    except BaseException as exc:
        error = _one_line(exc)[0]
        raise
    finally:
        summary.done, summary.failed = batches.done, batches.failed
        summary.wall_time = time.perf_counter() - t0
        closing = {"n_done": summary.done, "n_failed": summary.failed, "wall_time": summary.wall_time, "error": error}
        with catalog.writing():
            Writer(catalog).upsert("runs", pa.Table.from_pylist([{**record, **closing, "run_id": run_id, "status": status}]))
            for touched in (pipeline.name, "runs", "task_errors", pipeline.model_table):
                if touched and catalog.store(touched).exists():
                    write_sidecars(catalog.store(touched))
    return summary
