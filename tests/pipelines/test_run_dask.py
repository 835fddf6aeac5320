"""lake.run on a dask.distributed cluster: the same results as the serial path; a worker killed mid-run
leaves the lake consistent and the run (or a rerun) completes with one result per spectrum."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.kernels.tasks import ChebyshevNormalize
from astra_lake.pipelines.framework import Block, Output, Pipeline

distributed = pytest.importorskip("distributed")

N = 60
VOLATILE = {"run_id", "created", "modified", "t_elapsed", "t_overhead"}


def toy_process(block: Block, model: Any, options: dict[str, Any]) -> Output:
    """teff = median flux; rows below min_snr fail; the spectrum ``explode`` raises."""
    assert block.flux is not None
    pk = block.column("spectrum_pk")
    if options["explode"] is not None and (pk == options["explode"]).any():
        raise RuntimeError(f"cannot read spectrum {options['explode']}")
    time.sleep(options["sleep"])
    flux = block.flux.astype(np.float64)
    failed = {int(i): "too faint" for i in np.flatnonzero(block.column("snr") < options["min_snr"])}
    return Output(
        columns={"teff": np.median(flux, axis=1), "logg": np.full(len(block), model)},
        failed=failed,
        model_flux=np.ones_like(flux),
        continuum=flux,
    )


def toy_load(options: dict[str, Any]) -> float:
    return float(len(Path(options["model"]).read_text()))


TOY = Pipeline(
    name="the_cannon",
    version="9.9.9",
    inputs=("apogee_star",),
    process=toy_process,
    load=toy_load,
    options={"explode": None, "min_snr": 0.0, "sleep": 0.0, "model": None},
    files=("model",),
    columns=("snr",),
    model_table="model_apogee",
)


def _lake(path: Path) -> Lake:
    lake = Lake.init(path)
    src = S.sources(N, seed=1)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=2, batch=N // 3):
        lake.write("apogee_star", batch)
    return lake


def _rows(lake: Lake, table: str, where: str = "") -> pa.Table:
    tbl = lake.sql(f"SELECT * FROM {table} {where} ORDER BY spectrum_pk")
    return tbl.drop_columns([c for c in tbl.column_names if c in VOLATILE])


@pytest.fixture(scope="module")
def threads_cluster() -> Any:
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    with cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_run_equals_serial_run(tmp_path: Path, threads_cluster: Any) -> None:
    model = tmp_path / "toy.model"
    model.write_text("12345")
    serial, dask = _lake(tmp_path / "serial"), _lake(tmp_path / "dask")
    pks = serial.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_pylist()
    opts = {"explode": pks[7], "min_snr": 30.0, "model": str(model), "batch_rows": 30, "workers": 1}
    one = serial.run(TOY, **opts)
    two = dask.run(TOY, client=threads_cluster, **opts)
    assert (two.done, two.failed, two.selected) == (one.done, one.failed, one.selected) == (N, one.failed, N)
    assert one.failed > 1
    for table, where in [("the_cannon", ""), ("model_apogee", ""), ("task_errors", "")]:
        a, b = _rows(serial, table, where), _rows(dask, table, where)
        assert a.num_rows > 0 and a.equals(b), table
    runs = dask.sql("SELECT status, n_done, options FROM runs").to_pylist()
    assert runs[0]["status"] == "finished" and runs[0]["n_done"] == N and '"dask": "inproc://' in runs[0]["options"]
    again = dask.run(TOY, client=threads_cluster, **opts)
    assert again.run_id is None and again.skipped == N
    # lake.apply: the workers compute the blocks, this process makes the one commit
    for lake, client in ((serial, None), (dask, threads_cluster)):
        lake.apply(ChebyshevNormalize(), table="apogee_star", output="normalized_apogee", where="snr > 20", client=client)
    a, b = _rows(serial, "normalized_apogee"), _rows(dask, "normalized_apogee")
    assert 0 < a.num_rows < N and a.column_names == b.column_names
    for name in a.column_names:  # pixel arrays hold NaN (no continuum there): equal as NaN
        x, y = a.column(name).combine_chunks(), b.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(x.type) or pa.types.is_list(x.type):
            assert x.value_lengths().equals(y.value_lengths())
            x, y = x.flatten(), y.flatten()
        assert np.array_equal(
            x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False), equal_nan=pa.types.is_floating(x.type)
        )


def test_worker_killed_mid_run(tmp_path: Path) -> None:
    """SIGKILL one of two worker processes while it runs a block: dask recomputes the block elsewhere, the
    coordinator commits as before; every spectrum ends with exactly one result and one model spectrum."""
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the toy pipeline lives in this test module
    model = tmp_path / "toy.model"
    model.write_text("123")
    lake = _lake(tmp_path / "lake")
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0")
    with cluster, distributed.Client(cluster) as client:
        pids = client.run(os.getpid)
        outcome: dict[str, Any] = {}
        run = threading.Thread(
            target=lambda: outcome.update(summary=lake.run(TOY, client=client, model=str(model), sleep=1.0, batch_rows=20))
        )
        run.start()
        deadline = time.monotonic() + 120
        busy: list[str] = []
        while not busy and time.monotonic() < deadline:
            busy = [w for w, tasks in client.processing().items() if tasks and w in pids]
            time.sleep(0.05)
        assert busy, "no worker got a block"
        time.sleep(0.3)  # inside the block's sleep
        os.kill(pids[busy[0]], signal.SIGKILL)
        run.join(timeout=300)
        assert set(client.run(os.getpid).values()) != set(pids.values())  # the nanny restarted the killed worker
    summary = outcome["summary"]
    assert (summary.done, summary.failed) == (N, 0)
    rows = lake.sql("SELECT c.spectrum_pk, c.teff, c.task_pk, s.flux FROM the_cannon c JOIN apogee_star s USING (spectrum_pk)")
    assert rows.num_rows == N and len(set(rows.column("spectrum_pk").to_pylist())) == N
    medians = [np.median(np.asarray(f, dtype=np.float64)) for f in rows.column("flux").to_pylist()]
    assert np.allclose(rows.column("teff").to_numpy(), medians, rtol=1e-6)
    models = lake.sql("SELECT task_pk FROM model_apogee").column(0).to_pylist()
    assert sorted(models) == sorted(rows.column("task_pk").to_pylist())
    assert lake.sql("SELECT status FROM runs").column(0).to_pylist() == ["finished"]


def test_missing_dask_is_one_typed_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from astra_lake.errors import DaskUnavailableError
    from astra_lake.pipelines.distributed import client_for

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if it were not installed
    with pytest.raises(DaskUnavailableError, match=r"not installed: pip install 'astra-lake\[dask\]'"), client_for("local"):
        pass


def test_dask_ingest_equals_serial_ingest(tmp_path: Path, threads_cluster: Any) -> None:
    """Files as work units: workers read and conform them, this process stages and commits."""
    from astra_lake.ingest.runner import Ingestor

    fixtures = Path(__file__).resolve().parents[1] / "data" / "fixtures"
    files = [str(fixtures / n) for n in ("apStar-dr17-2M17335483-2753043.fits", "apVisit-r13-5095-55844-128.fits")]
    files.append(str(fixtures / "spec-3586-55181-0500.fits"))
    serial, dask = Lake.init(tmp_path / "serial"), Lake.init(tmp_path / "dask")
    one = Ingestor(serial.catalog).run(files)
    two = Ingestor(dask.catalog, client=threads_cluster).run(files)
    assert (one.read, one.failed, one.rows) == (two.read, two.failed, two.rows) and one.read == 3 and one.failed == 0
    tables = sorted(serial.catalog.existing_tables())
    assert tables == sorted(dask.catalog.existing_tables()) and {"apogee_star", "apogee_visit", "boss_visit"} <= set(tables)
    for table in tables:
        a, b = serial.sql(f"SELECT * FROM {table}"), dask.sql(f"SELECT * FROM {table}")
        keep = [c for c in a.column_names if c not in VOLATILE | {"ingested", "mtime"}]
        key = [(c, "ascending") for c in keep if not pa.types.is_nested(a.schema.field(c).type)]
        a, b = a.select(keep).sort_by(key), b.select(keep).sort_by(key)
        assert a.num_rows == b.num_rows > 0, table
        for name in keep:
            x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
            assert str(x) == str(y), (table, name)  # str: NaN == NaN
