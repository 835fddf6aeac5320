"""lake.run against a reference model: random sequences of new spectra, changed spectra (new values for
the same identity, some of which make the pipeline fail or raise), runs (incremental, forced, under a
new v_astra patch or minor, with a where clause, in small or large batches, or stopped at a result
commit as a crash would stop them), a changed model file and tags. After every step the lake holds
what the model predicts: one result per (spectrum, v_astra major.minor), each equal to the pipeline
applied to the input the spectrum had when it was last run (and to the model file of that run),
task_pk kept across re-runs of a key, run_id on every row, one model spectrum per result that did not
fail (a stopped run's model rows re-used by the next run), one task_errors row per failure, each
run's commits, and the runs table.

The model is plain Python: dicts of the spectra's current values and of the results the runs wrote.
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import math
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from unittest.mock import patch

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.lake.writer import Writer
from astra_lake.pipelines.framework import Block, Output, Pipeline
from astra_lake.schema.loader import load_schema
from astra_lake.schema.versions import version_to_int

NPIX = 8575
KEYS = 6  # spectra o0 .. o5, on sources 0 .. 5
FAINT, EXPLODE = 0, 7  # a spectrum of flux 0 fails (Output.failed); one of flux 7 makes process() raise
VALUE = st.integers(0, 8)
V_ASTRA = ("0.9.1", "0.9.2", "0.10.0")  # 0.9.2 is a patch of 0.9.1 (same results), 0.10.0 a new minor
FAIL = load_schema().table("the_cannon").flag_column("result_flags").latest.flag("flag_fitting_failure")
assert FAIL is not None


def process(block: Block, model: float, options: dict[str, Any]) -> Output:
    """teff = median flux, logg = the model file's number; flux 0 fails, flux 7 raises."""
    assert block.flux is not None
    flux = block.flux.astype(np.float64)
    teff = np.median(flux, axis=1)
    if (teff == EXPLODE).any():
        raise RuntimeError("cannot fit")
    return Output(
        columns={"teff": teff, "logg": np.full(len(block), model)},
        failed={int(i): "too faint" for i in np.flatnonzero(teff == FAINT)},
        model_flux=np.ones_like(flux),
        continuum=flux,
    )


def load(options: dict[str, Any]) -> float:
    return float(Path(options["model"]).read_text())


TOY = Pipeline(
    name="the_cannon",
    version="1.0.0",
    inputs=("apogee_star",),
    process=process,
    load=load,
    options={"model": None},
    files=("model",),
    model_table="model_apogee",
)


@dataclass(frozen=True)
class Result:
    """What the model knows of one result row."""

    task_pk: int
    teff: float | None  # None: process() raised for it
    logg: float | None
    v_astra: int
    run_id: int
    failed: bool
    stamp: int  # the model's clock when it was written (an input written later makes it stale)


def _spectra(rows: list[tuple[int, int]], sdss_ids: list[int]) -> pa.Table:
    """apogee_star rows o<k> of constant flux ``value`` and snr 10 * value."""
    n = len(rows)
    flux = np.repeat(np.array([v for _, v in rows], np.float32), NPIX)
    return pa.table(
        {
            "release": ["dr19"] * n,
            "apred": ["1.3"] * n,
            "apstar": ["stars"] * n,
            "telescope": ["apo25m"] * n,
            "obj": [f"o{k}" for k, _ in rows],
            "sdss_id": pa.array([sdss_ids[k] for k, _ in rows], pa.int64()),
            "snr": pa.array([10.0 * v for _, v in rows], pa.float32()),
            "flux": pa.FixedSizeListArray.from_arrays(pa.array(flux), NPIX),
            "ivar": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * NPIX, np.float32)), NPIX),
        }
    )


@functools.cache
def _template() -> Path:
    """A lake with KEYS sources and the first two spectra (o0 = 3, o1 = 5), built once."""
    root = Path(tempfile.mkdtemp(prefix="astra-lake-run-stateful-")) / "lake"
    atexit.register(shutil.rmtree, root.parent, ignore_errors=True)
    lake = Lake.init(root)
    lake.write("source", S.sources(KEYS, seed=5))
    ids = sorted(lake.sql("SELECT sdss_id FROM source").column(0).to_pylist())
    lake.write("apogee_star", _spectra([(0, 3), (1, 5)], ids))
    return root


class RunsVersusModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="astra-lake-run-stateful-"))
        shutil.copytree(_template(), self.dir / "lake")
        self.lake = Lake(self.dir / "lake")
        self.model_file = self.dir / "model.txt"
        self.model_file.write_text("4")
        self.sdss_ids = sorted(self.lake.sql("SELECT sdss_id FROM source").column(0).to_pylist())
        self.clock = 0
        self.values: dict[int, int] = {0: 3, 1: 5}  # k -> current flux value
        self.written: dict[int, int] = {0: 0, 1: 0}  # k -> clock of the spectrum's last write
        self.pk: dict[int, int] = self._pks()
        self.results: dict[tuple[int, int], Result] = {}  # (k, v_astra major.minor) -> result
        self.errors: set[tuple[int, int]] = set()  # (run_id, spectrum_pk)
        self.runs: list[dict[str, Any]] = []
        self.minted: set[int] = set()
        self.modelled: set[int] = set()  # task_pk that ever had a model spectrum
        self.pending: dict[tuple[int, int], int] = {}  # key -> task_pk of a model row an interrupted run left
        self.tags: dict[str, dict[tuple[int, int], Result]] = {}

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _pks(self) -> dict[int, int]:
        rows = self.lake.sql("SELECT obj, spectrum_pk FROM apogee_star").to_pylist()
        return {int(r["obj"][1:]): r["spectrum_pk"] for r in rows}

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    # -- rules ------------------------------------------------------------------------------------
    @precondition(lambda self: len(self.values) < KEYS)
    @rule(data=st.data(), value=VALUE)
    def add_spectrum(self, data: st.DataObject, value: int) -> None:
        self.add_spectrum_k(data.draw(st.sampled_from(sorted(set(range(KEYS)) - set(self.values)))), value)

    def add_spectrum_k(self, k: int, value: int) -> None:
        self.lake.write("apogee_star", _spectra([(k, value)], self.sdss_ids))
        self.values[k], self.written[k] = value, self._tick()
        pks = self._pks()
        assert {j: pks[j] for j in self.pk} == self.pk and k in pks  # identities of the others unchanged
        self.pk = pks

    @rule(data=st.data())
    def change_spectra(self, data: st.DataObject) -> None:
        """New values for existing identities (an upsert: spectrum_pk kept, modified advanced)."""
        ks = data.draw(st.lists(st.sampled_from(sorted(self.values)), min_size=1, max_size=3, unique=True))
        values = data.draw(st.lists(VALUE, min_size=len(ks), max_size=len(ks)))
        self.change_spectra_to(dict(zip(ks, values, strict=True)))

    def change_spectra_to(self, values: dict[int, int]) -> None:
        self.lake.upsert("apogee_star", _spectra(list(values.items()), self.sdss_ids))
        stamp = self._tick()
        for k, v in values.items():
            self.values[k], self.written[k] = v, stamp
        assert self._pks() == self.pk

    @rule(text=st.sampled_from(["4", "4.5", "6"]))
    def change_model_file(self, text: str) -> None:
        """A new model file: its sha256 goes into the next run's row; results are redone only when forced
        (work is selected on input changes alone, as upstream Astra selects it)."""
        self.model_file.write_text(text)

    @rule(
        force=st.booleans(),
        v=st.sampled_from(V_ASTRA),
        snr_above=st.sampled_from([None, None, 25, 45]),
        batch_rows=st.sampled_from([1, 2, 256]),
        interrupt=st.sampled_from([None, None, None, 0, 1]),
    )
    def run(self, force: bool, v: str, snr_above: int | None, batch_rows: int, interrupt: int | None = None) -> None:
        """A run; ``interrupt``: its result commit number ``interrupt`` (from 0) raises, as a crash there
        would stop it (the batch's model spectra and errors are committed, its results are not)."""
        v_astra = version_to_int(v)
        mm = v_astra // 1000
        selected = [k for k in sorted(self.values) if snr_above is None or 10 * self.values[k] > snr_above]
        todo = [k for k in selected if force or (k, mm) not in self.results or self.written[k] > self.results[(k, mm)].stamp]
        commits = [min(batch_rows, len(todo) - i) for i in range(0, len(todo), batch_rows)]
        crash = interrupt is not None and interrupt < len(commits)
        version = self.lake.version
        where = None if snr_above is None else f"snr > {snr_above}"
        opts = {"force": force, "v_astra": v, "where": where, "batch_rows": batch_rows, "model": str(self.model_file)}
        failed = [k for k in todo if self.values[k] in (FAINT, EXPLODE)]
        run_id = len(self.runs) + 1
        if crash:
            calls = [0]
            upsert = Writer.upsert

            def crashing(writer: Writer, table: str, data: Any, **kw: Any) -> int:
                if table == "the_cannon":
                    calls[0] += 1
                    if calls[0] > (interrupt or 0):
                        raise RuntimeError("interrupted")
                return upsert(writer, table, data, **kw)

            with patch.object(Writer, "upsert", crashing), pytest.raises(RuntimeError, match="interrupted"):
                self.lake.run(TOY, workers=1, **opts)
            pks = set(self.lake.sql(f"SELECT spectrum_pk FROM the_cannon WHERE run_id = {run_id}").column(0).to_pylist())
            done = [k for k in todo if self.pk[k] in pks]
            assert len(done) == sum(commits[: interrupt or 0]) and len(pks) == len(done)
        else:
            summary = self.lake.run(TOY, workers=1, **opts)
            assert (summary.selected, summary.skipped, summary.done, summary.failed) == (
                len(selected),
                len(selected) - len(todo),
                len(todo),
                len(failed),
            )
            if not todo:  # nothing to do: nothing written, no runs row
                assert summary.run_id is None and self.lake.version == version
                return
            assert summary.run_id == run_id
            done = todo
        upserts: dict[str, list[int]] = {}
        for c in self.lake.versions():
            if c.lake_version > version and c.operation == "upsert":
                upserts.setdefault(c.table, []).append(c.rows)
        task = {k: self._task(k, mm) for k in todo}
        blanked = [k for k in failed if task[k] in self.modelled]
        if crash:
            assert upserts.get("the_cannon", []) == commits[: interrupt or 0] and upserts["runs"] == [1, 1]
        else:  # results committed every batch_rows; model spectra of those that did not fail (or blanked); errors
            assert upserts["the_cannon"] == commits
            assert sum(upserts.get("model_apogee", [])) == len(todo) - len(failed) + len(blanked)
            assert sum(upserts.get("task_errors", [])) == len(failed) and upserts["runs"] == [1, 1]
        stamp = self._tick()
        logg = float(self.model_file.read_text())
        for k in done:
            value = self.values[k]
            self.results[(k, mm)] = Result(
                task_pk=task[k],  # -1: a new one, checked against those minted before
                teff=None if value == EXPLODE else float(value),
                logg=None if value == EXPLODE else logg,  # process() raised: its columns stay null
                v_astra=v_astra,
                run_id=run_id,
                failed=value in (FAINT, EXPLODE),
                stamp=stamp,
            )
            self.pending.pop((k, mm), None)
        errors = {(run_id, self.pk[k]) for k in failed if k in done}
        if crash:  # the interrupted batch's errors and model spectra are there, its results not (yet)
            stored = self.lake.sql(f"SELECT run_id, spectrum_pk FROM task_errors WHERE run_id = {run_id}").to_pylist()
            got = {(e["run_id"], e["spectrum_pk"]) for e in stored}
            assert errors <= got <= {(run_id, self.pk[k]) for k in failed}
            errors = got
            rows = self.lake.sql(f"SELECT spectrum_pk, task_pk FROM model_apogee WHERE run_id = {run_id}").to_pylist()
            by_pk = {pk: k for k, pk in self.pk.items()}
            for r in rows:
                k = by_pk[r["spectrum_pk"]]
                if k not in done:  # a model row whose result did not land: re-used by the next run of the key
                    assert k in todo and task[k] in (-1, r["task_pk"])
                    self.pending[(k, mm)] = r["task_pk"]
        self.errors |= errors
        self.runs.append(
            {
                "run_id": run_id,
                "status": "failed" if crash else "finished",
                "v_astra": v_astra,
                "n_selected": len(selected),
                "n_skipped": len(selected) - len(todo),
                "n_done": len(done),
                "n_failed": len([k for k in failed if k in done]),
                "model_sha256": hashlib.sha256(self.model_file.read_bytes()).hexdigest(),
                "input_version": version,
            }
        )
        got_results = self._read()
        new = {(k, mm) for k in done if task[k] == -1}
        for key in new:  # fresh task_pk from the lake's sequence: never one handed out before
            assert got_results[key].task_pk not in self.minted and got_results[key].task_pk > max(self.minted, default=0), key
            self.results[key] = replace(self.results[key], task_pk=got_results[key].task_pk)
        self.minted |= {self.results[key].task_pk for key in new}
        self.minted |= set(self.pending.values())
        self.modelled |= {self.results[(k, mm)].task_pk for k in done if not self.results[(k, mm)].failed}
        self.modelled |= set(self.pending.values())

    def _task(self, k: int, mm: int) -> int:
        """The task_pk a run gives key (k, mm): its result's, else that of a model row left by an
        interrupted run, else -1 (a new one)."""
        if (k, mm) in self.results:
            return self.results[(k, mm)].task_pk
        return self.pending.get((k, mm), -1)

    @rule()
    def compact_and_vacuum(self) -> None:
        """Rewriting files changes no row: no spectrum looks changed to the next run, every tag still reads."""
        self.lake.compact()
        self.lake.vacuum(retention_hours=0, dry_run=False)

    @rule()
    def tag(self) -> None:
        name = f"t{len(self.tags)}"
        self.lake.tag(name)
        self.tags[name] = dict(self.results)

    # -- invariants -------------------------------------------------------------------------------
    def _read(self, version: str | None = None) -> dict[tuple[int, int], Result]:
        rows = self.lake.sql(
            "SELECT spectrum_pk, task_pk, teff, logg, v_astra, run_id, result_flags FROM the_cannon", version
        ).to_pylist()
        by_pk = {pk: k for k, pk in self.pk.items()}
        out = {
            (by_pk[r["spectrum_pk"]], r["v_astra"] // 1000): Result(
                r["task_pk"], r["teff"], r["logg"], r["v_astra"], r["run_id"], bool(r["result_flags"] & FAIL.mask), 0
            )
            for r in rows
        }
        assert len(out) == len(rows), "a (spectrum, v_astra major.minor) has two results"
        return out

    @staticmethod
    def _same(got: dict[tuple[int, int], Result], expected: dict[tuple[int, int], Result]) -> None:
        assert set(got) == set(expected)
        for key, r in expected.items():
            g = got[key]
            assert (g.teff, g.logg, g.v_astra, g.run_id, g.failed) == (r.teff, r.logg, r.v_astra, r.run_id, r.failed), key
            assert r.task_pk == -1 or g.task_pk == r.task_pk, key

    @invariant()
    def results_equal_model(self) -> None:
        self._same(self._read(), self.results)
        for name, results in self.tags.items():
            self._same(self._read(name), results)

    @invariant()
    def model_spectra_errors_and_runs_equal_model(self) -> None:
        models = self.lake.sql(
            "SELECT task_pk, spectrum_pk, run_id, continuum[1] AS c, model_flux[1] AS m FROM model_apogee "
            "WHERE pipeline = 'the_cannon'"
        ).to_pylist()
        by_task = {m["task_pk"]: m for m in models}
        assert len(by_task) == len(models), "a task_pk has two model spectra"
        expected = {r.task_pk: (k, r) for (k, _), r in self.results.items() if not r.failed or r.task_pk in self.modelled}
        inflight = set(self.pending.values()) | {r.task_pk for key, r in self.results.items() if key in self.pending}
        assert set(by_task) == set(expected) | inflight, "model spectra: one per result that did not fail (or once had one)"
        for task_pk, (k, r) in expected.items():
            if task_pk in inflight:  # written by an interrupted run whose result did not land
                continue
            m = by_task[task_pk]
            assert (m["spectrum_pk"], m["run_id"]) == (self.pk[k], r.run_id), task_pk
            if r.failed:  # a result redone that failed: its earlier model spectrum is blanked, not left behind
                assert math.isnan(m["c"]) and math.isnan(m["m"]), task_pk
            else:
                assert (m["c"], m["m"]) == (r.teff, 1.0), task_pk
        errors = self.lake.sql("SELECT run_id, spectrum_pk FROM task_errors").to_pylist()
        assert {(e["run_id"], e["spectrum_pk"]) for e in errors} == self.errors and len(errors) == len(self.errors)
        cols = ", ".join(self.runs[0]) if self.runs else "run_id"
        runs = self.lake.sql(f"SELECT {cols} FROM runs ORDER BY run_id").to_pylist()
        assert runs == self.runs


# Bounded for CI; no shrinking (a failure prints its steps at once instead of minutes of shrinking).
TestRunsVersusModel = RunsVersusModel.TestCase
TestRunsVersusModel.settings = settings(
    max_examples=2,
    stateful_step_count=8,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_spectrum_that_fails_after_a_good_run() -> None:
    """A spectrum analysed, then changed so that the pipeline fails (and raises) for it, then run again:
    its result is replaced by a flagged one, and it keeps no model spectrum of the earlier run."""
    machine = RunsVersusModel()
    try:
        machine.run(force=False, v="0.9.1", snr_above=None, batch_rows=256)
        machine.change_model_file(text="6")
        machine.run(force=False, v="0.9.2", snr_above=None, batch_rows=256)  # nothing to do
        machine.change_spectra_to({0: FAINT, 1: EXPLODE})
        machine.run(force=False, v="0.9.2", snr_above=None, batch_rows=1)
        machine.results_equal_model()
        machine.model_spectra_errors_and_runs_equal_model()
    finally:
        machine.teardown()


def test_interrupted_run_then_rerun() -> None:
    """A run stopped at its second result commit (the batch's model spectra and errors committed, its
    results not), then the input of the stopped batch changed so that it fails, and the run redone: the
    stopped run's row counts only what it committed; the rerun re-uses the task_pk of the model rows left
    behind and blanks the one whose spectrum now fails."""
    machine = RunsVersusModel()
    try:
        machine.add_spectrum_k(2, FAINT)
        machine.add_spectrum_k(3, EXPLODE)
        machine.change_spectra_to({0: FAINT})  # 3 of the 4 fail: the stopped batch holds one or two of them
        machine.run(force=False, v="0.9.1", snr_above=None, batch_rows=2, interrupt=1)
        machine.results_equal_model()
        machine.model_spectra_errors_and_runs_equal_model()
        machine.change_spectra_to({0: 2, 1: EXPLODE, 2: 3, 3: 6})
        machine.run(force=False, v="0.9.1", snr_above=None, batch_rows=2)
        machine.results_equal_model()
        machine.model_spectra_errors_and_runs_equal_model()
        assert not machine.pending
    finally:
        machine.teardown()
