"""lake.run: one result per spectrum with provenance, failures as flagged rows, incremental reruns,
column-input pipelines, upstream timing semantics and one-line errors."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.errors import AstraLakeError, UnknownTableError
from astra_lake.ingest import synthetic as S
from astra_lake.pipelines.framework import Block, Output, Pipeline, PipelineError
from astra_lake.pipelines.timing import Timer
from astra_lake.schema.loader import load_schema

FAIL = load_schema().table("the_cannon").flag_column("result_flags").latest.flag("flag_fitting_failure")
assert FAIL is not None


def toy_process(block: Block, model: Any, options: dict[str, Any]) -> Output:
    """teff = median flux; rows below min_snr fail; the spectrum ``explode`` raises."""
    assert block.flux is not None
    pk = block.column("spectrum_pk")
    if options["explode"] is not None and (pk == options["explode"]).any():
        raise RuntimeError(f"cannot read spectrum {options['explode']}")
    time.sleep(options["sleep"] * len(block))
    flux = block.flux.astype(np.float64)
    failed = {int(i): "too faint" for i in np.flatnonzero(block.column("snr") < options["min_snr"])}
    return Output(
        columns={"teff": np.median(flux, axis=1), "logg": np.full(len(block), model or 0.0)},
        failed=failed,
        model_flux=np.ones_like(flux),
        continuum=flux,
    )


def toy_load(options: dict[str, Any]) -> float:
    time.sleep(options["load_sleep"])
    return float(len(Path(options["model"]).read_text())) if options["model"] else 0.0


TOY = Pipeline(
    name="the_cannon",
    version="9.9.9",
    inputs=("apogee_star",),
    process=toy_process,
    load=toy_load,
    options={"explode": None, "min_snr": 0.0, "sleep": 0.0, "load_sleep": 0.0, "model": None},
    files=("model",),
    columns=("snr",),
    model_table="model_apogee",
)


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    lake = Lake.init(tmp_path / "lake")
    src = S.sources(60, seed=1)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=2, batch=30):
        lake.write("apogee_star", batch)
    return lake


def _col(tbl: pa.Table, name: str) -> np.ndarray:
    return tbl.column(name).to_numpy(zero_copy_only=False)


def test_run_writes_one_result_per_spectrum_with_provenance(lake: Lake, tmp_path: Path) -> None:
    model = tmp_path / "toy.model"
    model.write_text("12345")
    pks = _col(lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk"), "spectrum_pk")
    before = lake.version
    summary = lake.run(TOY, batch_rows=16, workers=1, explode=int(pks[7]), min_snr=30.0, model=str(model), v_astra="0.9.1")
    faint = lake.sql("SELECT count(*) FROM apogee_star WHERE snr < 30 AND spectrum_pk <> " + str(pks[7])).column(0)[0].as_py()
    assert (summary.done, summary.failed, summary.skipped, summary.selected) == (60, faint + 1, 0, 60)
    rows = lake.sql(
        "SELECT c.*, s.flux AS input, s.snr FROM the_cannon c JOIN apogee_star s USING (spectrum_pk) ORDER BY spectrum_pk"
    )
    assert rows.num_rows == 60 and len(set(_col(rows, "spectrum_pk"))) == 60
    flags = _col(rows, "result_flags")
    exploded = _col(rows, "spectrum_pk") == pks[7]
    failed = (_col(rows, "snr") < 30) | exploded
    assert np.array_equal((flags & FAIL.mask) != 0, failed)
    teff = _col(rows, "teff")
    medians = np.array([np.median(np.asarray(f, dtype=np.float64)) for f in rows.column("input").to_pylist()])
    assert np.isnan(teff[exploded]).all() and np.allclose(teff[~exploded], medians[~exploded], rtol=1e-6)
    assert np.all(_col(rows, "logg")[~exploded] == 5.0) and set(_col(rows, "v_astra")) == {9001}
    # provenance: the runs row, its id on every result and model row
    run = lake.sql("SELECT * FROM runs").to_pylist()
    assert len(run) == 1 and run[0]["status"] == "finished" and run[0]["run_id"] == summary.run_id
    assert run[0]["model_sha256"] == hashlib.sha256(b"12345").hexdigest() and run[0]["model_path"] == str(model.resolve())
    assert (run[0]["n_done"], run[0]["n_failed"], run[0]["input_version"], run[0]["pipeline_version"]) == (
        60,
        faint + 1,
        before,
        "9.9.9",
    )
    assert json.loads(run[0]["options"])["min_snr"] == 30.0 and run[0]["wall_time"] > 0 and run[0]["host"]
    assert set(_col(rows, "run_id")) == {summary.run_id}
    errors = lake.sql("SELECT * FROM task_errors ORDER BY spectrum_pk").to_pylist()
    assert len(errors) == faint + 1 and {e["run_id"] for e in errors} == {summary.run_id}
    boom = next(e for e in errors if e["spectrum_pk"] == pks[7])
    assert boom["error"] == f"RuntimeError: cannot read spectrum {pks[7]}" and "toy_process" in boom["traceback"]
    models = lake.sql(
        "SELECT c.spectrum_pk, m.continuum, s.flux, m.run_id FROM the_cannon c JOIN model_apogee m USING (task_pk) "
        "JOIN apogee_star s ON s.spectrum_pk = c.spectrum_pk WHERE m.pipeline = 'the_cannon'"
    )
    assert models.num_rows == 60 - faint - 1  # failed spectra have no model spectrum
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(models.column("continuum").to_pylist(), models.column("flux").to_pylist(), strict=True)
    )
    assert set(_col(models, "run_id")) == {summary.run_id}


def test_second_run_writes_nothing_force_redoes_and_changed_input_is_redone(lake: Lake) -> None:
    first = lake.run(TOY, workers=1)
    version = lake.version
    again = lake.run(TOY, workers=1)
    assert again.run_id is None and "nothing to do" in again.message and "nothing was written" in again.message
    assert lake.version == version and again.skipped == 60
    keys = lake.sql("SELECT spectrum_pk, task_pk, created FROM the_cannon ORDER BY spectrum_pk")
    # an input spectrum re-written after its result is redone, alone; the result keeps task_pk and created
    one = lake.sql("SELECT * FROM apogee_star ORDER BY spectrum_pk LIMIT 1")
    pk = one.column("spectrum_pk")[0].as_py()
    flux = np.asarray(one.column("flux")[0].as_py(), dtype=np.float32) * 2
    one = one.set_column(one.column_names.index("flux"), "flux", pa.FixedSizeListArray.from_arrays(pa.array(flux), flux.size))
    lake.upsert("apogee_star", one.drop_columns(["created", "modified"]))
    redo = lake.run(TOY, workers=1)
    assert (redo.done, redo.skipped) == (1, 59)
    after = lake.sql(f"SELECT task_pk, created, teff, run_id FROM the_cannon WHERE spectrum_pk = {pk}").to_pylist()[0]
    assert after["run_id"] == redo.run_id != first.run_id
    assert after["teff"] == pytest.approx(float(np.median(flux)), rel=1e-6)
    k0 = keys.to_pylist()[0]
    assert (after["task_pk"], after["created"]) == (k0["task_pk"], k0["created"])
    # force redoes everything, keeping identities; another major.minor is a new result set
    forced = lake.run(TOY, workers=1, force=True)
    assert forced.done == 60 and lake.sql("SELECT count(*) FROM the_cannon").column(0)[0].as_py() == 60
    assert lake.sql("SELECT spectrum_pk, task_pk, created FROM the_cannon ORDER BY spectrum_pk").equals(keys)
    newer = lake.run(TOY, workers=1, v_astra="0.2.0", where="snr > 100")
    n_bright = lake.sql("SELECT count(*) FROM apogee_star WHERE snr > 100").column(0)[0].as_py()
    assert newer.done == n_bright and lake.sql("SELECT count(*) FROM the_cannon").column(0)[0].as_py() == 60 + n_bright


def column_process(block: Block, model: Any, options: dict[str, Any]) -> Output:
    assert block.flux is None
    return Output(columns={"teff": block.column("teff") + 1.0, "fe_h": block.column("fe_h")})


def test_column_input_pipeline_reads_the_newest_result(lake: Lake) -> None:
    pks = _col(lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk"), "spectrum_pk")
    lake.upsert("aspcap", S.results("aspcap", pks, v_astra="0.6.0", seed=3))
    lake.upsert("aspcap", S.results("aspcap", pks[:20], v_astra="0.8.0", seed=4))
    pipeline = Pipeline(name="the_cannon", version="1", inputs=("aspcap",), process=column_process, columns=("teff", "fe_h"))
    summary = lake.run(pipeline, workers=1, batch_rows=7)
    assert summary.done == 60
    got = lake.sql(
        "SELECT c.teff AS new, a.teff AS old FROM the_cannon c JOIN aspcap a USING (spectrum_pk) "
        "QUALIFY row_number() OVER (PARTITION BY a.spectrum_pk ORDER BY a.v_astra DESC) = 1"
    )
    old, new = _col(got, "old"), _col(got, "new")
    assert got.num_rows == 60 and np.allclose(new[np.isfinite(old)], old[np.isfinite(old)] + 1)


def test_timer_spreads_overheads_as_upstream() -> None:
    """astra-facts §3: intervals go to results or overheads, writes are paused, and each flush adds
    the running mean overhead per result so far."""
    now = [0.0]
    timer = Timer(clock=lambda: now[0])
    now[0] = 2.0
    assert timer.overhead() == 2.0  # e.g. loading the model
    now[0] = 6.0
    assert timer.results(4) == 4.0  # 4 results in 4 s
    with timer.paused():
        now[0] = 100.0  # a write: not counted
    elapsed, mean = timer.add_overheads(np.full(4, 1.0))
    assert mean == 0.5 and np.allclose(elapsed, 1.5)
    now[0] = 101.0
    timer.overhead()
    now[0] = 103.0
    assert timer.results(4) == 2.0
    elapsed, mean = timer.add_overheads(np.full(4, 0.5))
    assert mean == 3.0 / 8 and np.allclose(elapsed, 0.5 + 3.0 / 8)


def test_run_rows_carry_upstream_timing(lake: Lake) -> None:
    lake.run(TOY, workers=1, batch_rows=30, sleep=0.01, load_sleep=0.6)
    rows = lake.sql("SELECT t_elapsed, t_overhead FROM the_cannon").to_pylist()
    overheads = sorted({r["t_overhead"] for r in rows})
    assert len(overheads) <= 2 and overheads[0] >= 0.6 / 60  # the load time spread over the results
    assert all(r["t_elapsed"] >= 0.01 + r["t_overhead"] - 1e-6 for r in rows)


def test_bad_requests_fail_in_one_line_and_write_nothing(lake: Lake, tmp_path: Path) -> None:
    version = lake.version
    with pytest.raises(UnknownTableError, match=r"unknown pipeline 'nope'; pipelines: .*the_cannon.*the_payne"):
        lake.run("nope")
    with pytest.raises(PipelineError, match=r"pipeline the_cannon has no option\(s\) colour; options: explode"):
        lake.run(TOY, colour=1)
    with pytest.raises(PipelineError, match="reads apogee_star; not boss_combined"):
        lake.run(TOY, table="boss_combined")
    with pytest.raises(PipelineError, match=r"where clause on apogee_star failed: .*nonsense"):
        lake.run(TOY, where="nonsense > 1")
    with pytest.raises(PipelineError, match=r"option model: no such file .*missing\.model"):
        lake.run(TOY, model=str(tmp_path / "missing.model"))
    with pytest.raises(PipelineError, match="the_cannon needs a trained model: --model PATH"):
        lake.run("the_cannon")
    assert lake.version == version

    def wrong(block: Block, model: Any, options: dict[str, Any]) -> Output:
        return Output(columns={"colour": np.zeros(len(block))})

    with pytest.raises(PipelineError, match="returned column 'colour', which the_cannon does not declare"):
        lake.run(Pipeline(name="the_cannon", version="1", inputs=("apogee_star",), process=wrong))
    failed = lake.sql("SELECT status, error, n_done FROM runs").to_pylist()  # a run that started and stopped
    assert failed == [{"status": "failed", "error": failed[0]["error"], "n_done": 0}]
    assert failed[0]["error"].startswith("PipelineError: pipeline the_cannon returned column 'colour'")
    assert lake.sql("SELECT count(*) FROM the_cannon").column(0)[0].as_py() == 0
    with pytest.raises(PipelineError, match="input aspcap has no column"):
        lake.run(Pipeline(name="the_cannon", version="1", inputs=("aspcap",), process=wrong, columns=("colour",)))
    with pytest.raises(AstraLakeError, match="source is a source table"):
        lake.run(Pipeline(name="the_cannon", version="1", inputs=("source",), process=wrong))


def boss_process(block: Block, model: Any, options: dict[str, Any]) -> Output:
    """teff = median flux; raises for spectra whose median flux is negative."""
    assert block.flux is not None and block.wavelength is not None and block.wavelength.shape[-1] == block.flux.shape[1]
    flux = block.flux.astype(np.float64)
    if (np.median(flux, axis=1) < 0).any():
        raise ValueError("negative flux")
    return Output(columns={"teff": np.median(flux, axis=1)}, model_flux=np.full_like(flux, 0.5), continuum=flux)


def test_boss_spectra_and_model_boss(tmp_path: Path) -> None:
    """A spectrum pipeline over a BOSS table, writing model spectra to model_boss, with a per-spectrum
    exception flagged by the table's own exception flag."""
    lake = Lake.init(tmp_path / "boss")
    src = S.sources(20, seed=7)
    lake.write("source", src)
    rows = next(S.spectra("boss_combined", src.column("sdss_id").to_numpy(), seed=8, batch=20))
    flux = np.asarray(rows.column("flux").to_pylist(), dtype=np.float32)
    flux[3] = -np.abs(flux[3])
    rows = rows.set_column(
        rows.column_names.index("flux"), "flux", pa.FixedSizeListArray.from_arrays(pa.array(flux.ravel()), flux.shape[1])
    )
    lake.write("boss_combined", rows)
    pipeline = Pipeline(
        name="bossnet", version="1", inputs=("boss_combined",), process=boss_process,
        failure_flag="flag_unreliable_teff", exception_flag="flag_runtime_exception", model_table="model_boss",
    )  # fmt: skip
    summary = lake.run(pipeline, workers=1, batch_rows=8)
    assert (summary.done, summary.failed) == (20, 1)
    got = lake.sql(
        "SELECT b.spectrum_pk, b.teff, flag_runtime_exception, flag_bad FROM bossnet b ORDER BY spectrum_pk"
    ).to_pylist()
    bad = [r for r in got if r["flag_runtime_exception"]]
    assert len(bad) == 1 and bad[0]["teff"] is None and bad[0]["flag_bad"]
    models = lake.sql("SELECT m.model_flux FROM bossnet b JOIN model_boss m USING (task_pk) WHERE m.pipeline = 'bossnet'")
    assert models.num_rows == 19 and len(models.column(0)[0].as_py()) == 4648
    error = lake.sql("SELECT flag, error FROM task_errors").to_pylist()
    assert error == [{"flag": "flag_runtime_exception", "error": "ValueError: negative flux"}]
