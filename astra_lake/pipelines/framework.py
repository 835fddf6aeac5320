"""How to declare a pipeline that ``lake.run`` / ``astra-lake run`` can run.

A pipeline is a module ``astra_lake/pipelines/<name>.py`` with a module-level ``PIPELINE``; it has no
I/O code of its own: the runner selects the work, reads blocks from one pinned snapshot, calls the
pipeline's function, writes results / model spectra / errors in committed batches, and records timing
and provenance (see :mod:`astra_lake.pipelines.run`)::

    from astra_lake.pipelines.framework import Block, Output, Pipeline

    def load(options):                       # once per run, before any block (e.g. read the model file)
        return MyNet.read(options["model"])

    def process(block: Block, net: MyNet, options) -> Output:
        teff, logg = net.predict(block.flux, block.ivar)      # block.flux: (n, npix) float32
        bad = ~np.isfinite(teff)
        return Output(
            columns={"teff": teff, "logg": logg},             # result-table columns, n values each
            flags={"result_flags": np.where(bad, FLAG, 0)},   # optional: values OR-ed into flag columns
            failed={int(i): "no finite prediction" for i in np.flatnonzero(bad)},
            model_flux=None, continuum=None,                  # optional (n, npix of model_table's grid)
        )

    PIPELINE = Pipeline(
        name="my_pipeline",                   # its result table in data_schema/tables/ (kind: pipeline)
        version="1.0.0",                      # the pipeline's own version, recorded in ``runs``
        inputs=("apogee_star",),              # spectrum table(s) it accepts; the first ones run by default
        process=process,
        load=load,
        options={"model": None},              # every accepted option with its default ("model" = --model)
        files=("model",),                     # options that name files: their sha256 goes into ``runs``
        columns=("snr",),                     # extra input columns the function reads (block.column("snr"))
        lookup="SELECT i.spectrum_pk, s.ra FROM {input} i JOIN source s USING (source_pk)",  # columns of other tables
        failure_flag="flag_fitting_failure",  # result_flags bit set on rows listed in Output.failed
        exception_flag="flag_runtime_exception",  # set when process() raises for a spectrum (default: failure_flag)
        model_table="model_apogee",           # where Output.model_flux / continuum go (keyed by task_pk)
        v_astra="0.7.0",                      # optional: v_astra of its results when the run gives none
    )

A table computed by one query over the whole lake rather than per spectrum (``best``) declares a
:class:`Compilation` instead: ``lake.run("best")`` runs its query over the pinned snapshot and upserts
the rows that changed (see :mod:`astra_lake.pipelines.compilation`).

Rules the runner applies, so a pipeline does not have to:

- **Input.** ``inputs`` are spectrum tables (``block.flux``, ``block.ivar``, ``block.pixel_flags``
  ``(n, npix)``, ``block.wavelength`` ``(npix,)`` or ``(n, npix)`` for native-grid tables such as
  ``boss_visit``) or, for column-input pipelines, result tables: then ``block.flux`` is None and
  ``block.column(name)`` gives the ``columns`` (the input's newest row per spectrum, since results are
  keyed by ``spectrum_pk``). ``--table T`` picks one of ``inputs``; ``--where SQL`` filters the input
  table's view (e.g. ``"snr > 50"`` or ``"NOT flag_bad"``). ``lookup`` is SQL over the run's snapshot
  giving ``spectrum_pk`` and columns from other tables (``{input}`` names the input table): each block
  gets them as ``block.column(name)``, null for a spectrum the query has no row for.
- **Failures.** A row listed in ``Output.failed`` gets ``failure_flag`` and a ``task_errors`` row. If
  ``process`` raises, the block is retried one spectrum at a time; each spectrum that still raises gets
  a result row with only ``exception_flag`` set and its exception in ``task_errors``. A run never aborts
  for one spectrum. A failed spectrum gets no model spectrum; one whose earlier result had one gets
  that model row replaced by NaN (of this run), so no model of an older input outlives its result.
- **Identity and provenance.** ``spectrum_pk``, ``source_pk``, ``sdss_id``, ``v_astra``, ``task_pk``,
  ``run_id``, ``t_elapsed``, ``t_overhead`` and ``tag`` are filled by the runner; ``Output.columns``
  holds only the pipeline's own columns (the runner names the first unknown one if any is not declared).
- **Versions.** Results are written under the run's ``v_astra`` (``--v-astra``), else the pipeline's
  ``v_astra``, else astra-lake's own version. The flags a pipeline sets are those of its table's newest
  flag edition; a ``v_astra`` whose edition lacks the pipeline's failure flags is refused (ApogeeNet v3,
  whose flag bits differ from v2's before 0.7.0, declares ``v_astra="0.7.0"``).
- **Speed.** ``workers`` is the number of threads the pipeline may use: the runner sets numba's thread
  count to it, and ``options["workers"]`` carries it (e.g. for onnxruntime's intra-op threads).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from astra_lake.errors import AstraLakeError, UnknownTableError
from astra_lake.pipelines.columns import NO_PREDICTION, no_prediction
from astra_lake.schema.loader import Schema
from astra_lake.schema.versions import int_to_version


class PipelineError(AstraLakeError):
    """A pipeline declaration or its options are invalid, or a pipeline returned malformed output."""


@dataclass
class Block:
    """One block of input rows: identity and requested columns in ``meta``; pixels for spectrum inputs."""

    table: str
    meta: pa.Table
    wavelength: npt.NDArray[np.float64] | None = None
    flux: npt.NDArray[np.float32] | None = None
    ivar: npt.NDArray[np.float32] | None = None
    pixel_flags: npt.NDArray[np.int32] | None = None

    def __len__(self) -> int:
        return int(self.meta.num_rows)

    def column(self, name: str) -> np.ndarray:
        """A metadata column as numpy (nulls become NaN for floats)."""
        if name not in self.meta.column_names:
            raise PipelineError(f"block of {self.table} has no column {name!r}; declare it in Pipeline.columns or lookup")
        return self.meta.column(name).to_numpy(zero_copy_only=False)

    def rng(self, seed: int) -> np.random.Generator:
        """Random draws reproducible per spectrum: seeded by ``seed`` and the block's spectrum_pk."""
        return np.random.default_rng([int(seed), *self.column("spectrum_pk").tolist()])

    def joined(self, extra: pa.Table | None) -> Block:
        """This block with the columns of ``extra`` (one row per spectrum_pk, sorted by it), matched by
        spectrum_pk; null where ``extra`` has no row."""
        if extra is None:
            return self
        keys = extra.column("spectrum_pk").to_numpy()
        pks = self.column("spectrum_pk")
        pos = np.clip(np.searchsorted(keys, pks), 0, max(len(keys) - 1, 0))
        hit = keys[pos] == pks if len(keys) else np.zeros(len(pks), dtype=bool)
        index = pa.array(pos, pa.int64(), mask=~hit)
        meta = self.meta
        for name in extra.column_names:
            if name != "spectrum_pk":
                meta = meta.append_column(name, extra.column(name).take(index))
        return Block(self.table, meta, self.wavelength, self.flux, self.ivar, self.pixel_flags)

    def take(self, rows: npt.ArrayLike) -> Block:
        """The sub-block of the given row positions."""
        idx = np.asarray(rows, dtype=np.int64)
        pick = (lambda a: None if a is None else a[idx]) if self.flux is not None else (lambda a: None)
        wave = self.wavelength
        if wave is not None and wave.ndim == 2:
            wave = wave[idx]
        return Block(self.table, self.meta.take(pa.array(idx)), wave, pick(self.flux), pick(self.ivar), pick(self.pixel_flags))


@dataclass
class Output:
    """What a pipeline returns for a block of n rows.

    ``columns``: result-table columns, n values each. ``flags``: values OR-ed into flag columns.
    ``failed``: row position -> one-line reason (the failure flag is set, a ``task_errors`` row written).
    ``model_flux`` / ``continuum``: ``(n, npix)`` on the grid of the pipeline's ``model_table``.
    """

    columns: Mapping[str, npt.ArrayLike] = field(default_factory=dict)
    flags: Mapping[str, npt.ArrayLike] = field(default_factory=dict)
    failed: Mapping[int, str] = field(default_factory=dict)
    model_flux: npt.NDArray[np.floating] | None = None
    continuum: npt.NDArray[np.floating] | None = None


def predicted(columns: dict[str, Any], table: str, reason: str = NO_PREDICTION) -> Output:
    """A predictor's columns as an Output: its ``result_flags`` OR-ed in, and the rows whose
    ``flag_runtime_exception`` is set failed with ``reason``."""
    flags = columns.pop("result_flags")
    return Output(columns=columns, flags={"result_flags": flags}, failed=no_prediction(flags, table, reason))


Process = Callable[[Block, Any, dict[str, Any]], Output]
Load = Callable[[dict[str, Any]], Any]


def _no_model(options: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class Pipeline:
    """A pipeline: its result table, version, inputs, block function and options (see module docstring)."""

    name: str
    version: str
    inputs: tuple[str, ...]
    process: Process
    load: Load = _no_model
    options: Mapping[str, Any] = field(default_factory=dict)
    files: tuple[str, ...] = ()
    columns: tuple[str, ...] = ()
    lookup: str | None = None
    failure_flag: str = "flag_fitting_failure"
    exception_flag: str | None = None
    model_table: str | None = None
    description: str = ""
    v_astra: str | None = None

    def check(self, schema: Schema, v_astra: int | None = None) -> None:
        """Refuse a declaration that does not match data_schema/ (one line naming what is wrong)."""
        try:
            result = schema.table(self.name)
            inputs = [schema.table(t) for t in self.inputs]
        except UnknownTableError as exc:
            raise PipelineError(f"pipeline {self.name}: {exc}") from None
        if result.kind != "pipeline":
            raise PipelineError(f"pipeline {self.name}: its result table is a {result.kind} table, expected kind: pipeline")
        for t in inputs:
            if t.kind not in ("spectrum", "pipeline"):
                raise PipelineError(
                    f"pipeline {self.name}: input {t.name} is a {t.kind} table; results are keyed by spectrum_pk, "
                    "so inputs are spectrum or result tables"
                )
            missing = [c for c in self.columns if c not in t.column_names]
            if missing:
                raise PipelineError(f"pipeline {self.name}: input {t.name} has no column(s) {', '.join(missing)}")
        summary = result.summary_column
        for flag in (self.failure_flag, self.exception_flag):
            if flag is not None and (summary is None or summary.latest.flag(flag) is None):
                raise PipelineError(f"pipeline {self.name}: {result.name} has no flag {flag!r} in its summary flag column")
        if v_astra is not None:
            for fc in result.flag_columns:  # results carry the newest edition's bits: they must read as such
                if fc.edition_for(v_astra) is not fc.latest:
                    raise PipelineError(
                        f"pipeline {self.name} sets the flags of {result.name}.{fc.name}'s newest edition, but results of "
                        f"v_astra {int_to_version(v_astra)} are read by an older one; give v_astra >= {self.v_astra or '?'}"
                    )
        if self.model_table is not None and schema.table(self.model_table).kind != "pixel":
            raise PipelineError(f"pipeline {self.name}: model_table {self.model_table} is not a pixel table")
        unknown = [f for f in self.files if f not in self.options]
        if unknown:
            raise PipelineError(f"pipeline {self.name}: files {unknown} are not declared options")

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Defaults updated with ``given``; an option the pipeline does not declare is an error."""
        return _resolve(self.name, self.options, given)


def _resolve(name: str, options: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(given) - set(options))
    if unknown:
        valid = ", ".join(sorted(options)) or "(none)"
        raise PipelineError(f"pipeline {name} has no option(s) {', '.join(unknown)}; options: {valid}")
    return {**options, **{k: v for k, v in given.items() if v is not None}}


Select = Callable[[Any, int, dict[str, Any]], pa.Table]


@dataclass(frozen=True)
class Compilation:
    """A result table computed by one query over the whole lake (``best``), run by ``lake.run`` like a
    pipeline (see :mod:`astra_lake.pipelines.compilation`).

    ``select(con, v_astra, options)`` runs on a connection to the pinned snapshot and returns the table's
    rows (identity columns ``spectrum_pk``, ``source_pk``, ``sdss_id``, ``_healpix_29`` and its own
    columns) plus a boolean ``_changed``: whether the stored row of that key and ``v_astra`` major.minor
    differs or is older than what it was computed from. The runner writes the changed rows (all with
    ``force``) and records the run; nothing changed: nothing is written."""

    name: str
    version: str
    select: Select
    options: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    def check(self, schema: Schema) -> None:
        try:
            result = schema.table(self.name)
        except UnknownTableError as exc:
            raise PipelineError(f"pipeline {self.name}: {exc}") from None
        if result.kind != "pipeline":
            raise PipelineError(f"pipeline {self.name}: its result table is a {result.kind} table, expected kind: pipeline")

    def resolve_options(self, given: Mapping[str, Any]) -> dict[str, Any]:
        return _resolve(self.name, self.options, given)


def available() -> list[str]:
    """Names of the modules of ``astra_lake.pipelines`` that declare a ``PIPELINE``."""
    import astra_lake.pipelines as package

    names = []
    for info in pkgutil.iter_modules(package.__path__):
        if not info.name.startswith("_") and _declares(info.name):
            names.append(info.name)
    return sorted(names)


def _declares(module: str) -> bool:
    try:
        declared = getattr(importlib.import_module(f"astra_lake.pipelines.{module}"), "PIPELINE", None)
        return isinstance(declared, Pipeline | Compilation)
    except ImportError:
        return False


def get(name: str) -> Pipeline | Compilation:
    """The pipeline declared by module ``astra_lake.pipelines.<name>``."""
    try:
        module = importlib.import_module(f"astra_lake.pipelines.{name}") if name.isidentifier() else None
    except ModuleNotFoundError as exc:
        if exc.name != f"astra_lake.pipelines.{name}":
            raise
        module = None
    pipeline = getattr(module, "PIPELINE", None)
    if not isinstance(pipeline, Pipeline | Compilation):
        raise UnknownTableError(f"unknown pipeline {name!r}; pipelines: {', '.join(available()) or '(none)'}")
    return pipeline
