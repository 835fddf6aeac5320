"""The coordinator of a ``client="local"`` run (the path of ``astra-lake run --dask local``) SIGKILLed
after its first commit: the lake stays consistent (every committed batch whole, no result twice, the
snapshot readable, the run left as ``running``), the LocalCluster's worker processes are all gone once
the process group is killed, and a rerun completes with one result per spectrum equal to a serial run."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parents[2]
N = 60
BATCH = 6
VOLATILE = {"run_id", "created", "modified", "t_elapsed", "t_overhead", "task_pk"}

# The toy pipeline as the child (its __main__: shipped to the workers by value) and this process see it:
# teff = median flux, spectra with spectrum_pk % 7 == 0 fail; each block sleeps so that the run is
# still going when it is killed.
TOY = """
import time
import numpy as np
from astra_lake.pipelines.framework import Output, Pipeline

def process(block, model, options):
    time.sleep(options["sleep"])
    pk = block.column("spectrum_pk")
    flux = block.flux.astype(np.float64)
    return Output(columns={"teff": np.median(flux, axis=1)}, failed={int(i): "toy failure" for i in np.flatnonzero(pk % 7 == 0)},
                  model_flux=np.ones_like(flux), continuum=flux)

TOY = Pipeline(name="the_cannon", version="1", inputs=("apogee_star",), process=process, model_table="model_apogee",
               options={"sleep": 0.0})
"""


def _toy() -> Any:
    scope: dict[str, Any] = {"__name__": "toy_pipeline"}
    exec(TOY, scope)
    return scope["TOY"]


def _lake(path: Path) -> Lake:
    lake = Lake.init(path)
    src = S.sources(N, seed=31)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=32, batch=N // 2):
        lake.write("apogee_star", batch)
    return lake


def _group(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group."""
    alive = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # state, ppid, pgrp, ...
        if int(fields[2]) == pgid and fields[0] != "Z":
            alive.append(int(entry.name))
    return alive


def _rows(lake: Lake, table: str) -> pa.Table:
    tbl = lake.sql(f"SELECT * FROM {table} ORDER BY spectrum_pk")
    return tbl.drop_columns([c for c in tbl.column_names if c in VOLATILE])


def _check_consistent(lake: Lake) -> int:
    """Every committed result batch whole (its model spectra and errors there), no result twice, results
    equal to the pipeline on their input; returns the number of results."""
    rows = lake.sql(
        "SELECT c.spectrum_pk, c.task_pk, c.run_id, c.teff, c.result_flags, s.flux "
        "FROM the_cannon c JOIN apogee_star s USING (spectrum_pk)"
    )
    pks = rows.column("spectrum_pk").to_pylist()
    assert len(pks) == len(set(pks)) == lake.sql("SELECT count(*) FROM the_cannon").column(0)[0].as_py()
    medians = np.array([np.median(np.asarray(f, dtype=np.float64)) for f in rows.column("flux").to_pylist()])
    assert np.allclose(rows.column("teff").to_numpy(), medians, rtol=1e-6)
    failed = {p for p in pks if p % 7 == 0}
    assert {p for p, f in zip(pks, rows.column("result_flags").to_pylist(), strict=True) if f & 1} == failed
    by_task = dict(zip(rows.column("task_pk").to_pylist(), zip(pks, rows.column("run_id").to_pylist(), strict=True), strict=True))
    models = lake.sql("SELECT task_pk, spectrum_pk, run_id FROM model_apogee WHERE pipeline = 'the_cannon'").to_pylist()
    assert len({m["task_pk"] for m in models}) == len(models)
    done = {m["task_pk"] for m in models if m["task_pk"] in by_task}
    assert done == {t for t, (p, _) in by_task.items() if p not in failed}  # each committed result's model spectrum
    assert all(by_task[m["task_pk"]] == (m["spectrum_pk"], m["run_id"]) for m in models if m["task_pk"] in by_task)
    errors = lake.sql("SELECT spectrum_pk, run_id FROM task_errors").to_pylist()
    committed = {(p, r) for p, r in by_task.values() if p in failed}
    assert committed <= {(e["spectrum_pk"], e["run_id"]) for e in errors}  # each committed failure's error row
    return len(pks)


def test_coordinator_killed_mid_run(tmp_path: Path) -> None:
    lake = _lake(tmp_path / "lake")
    script = textwrap.dedent(
        f"""
        from astra_lake import Lake
        {textwrap.indent(TOY, "        ").strip()}
        Lake({str(tmp_path / "lake")!r}).run(TOY, client="local", batch_rows={BATCH}, sleep=0.4)
        """
    )
    env = {**os.environ, "NUMBA_CACHE_DIR": str(ROOT / ".venv" / "numba-cache"), "PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-c", script], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    log = tmp_path / "lake" / "the_cannon" / "dataset" / "_delta_log"
    try:
        deadline = time.monotonic() + 300
        while not (log.exists() and any(log.glob("*.json"))) and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert child.poll() is None, child.stderr.read().decode()[-2000:] if child.stderr else ""
        time.sleep(float(np.random.default_rng().uniform(0.0, 0.4)))  # somewhere in the following batches
        workers = [p for p in _group(child.pid) if p != child.pid]
        assert workers, "the LocalCluster has no worker processes"
        os.kill(child.pid, signal.SIGKILL)  # the coordinator alone: its nannies and workers are not told
        child.wait(timeout=60)
        assert child.returncode == -signal.SIGKILL
        deadline = time.monotonic() + 60
        while _group(child.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _group(child.pid), "LocalCluster processes outlived their killed coordinator"  # they watch it
    finally:
        with contextlib.suppress(ProcessLookupError):  # whatever is left of the group (nothing, normally)
            os.killpg(child.pid, signal.SIGKILL)
        if child.stderr:
            child.stderr.close()

    lake = Lake(tmp_path / "lake")
    partial = _check_consistent(lake)
    assert 0 < partial < N  # killed after the first commit, before the last
    runs = lake.sql("SELECT status, n_done FROM runs").to_pylist()
    assert runs == [{"status": "running", "n_done": None}]  # the killed run is left as running, never closed

    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    with cluster, distributed.Client(cluster) as client:
        again = lake.run(_toy(), client=client, batch_rows=BATCH)
    assert (again.done, again.skipped) == (N - partial, partial)
    assert _check_consistent(lake) == N
    serial = _lake(tmp_path / "serial")
    serial.run(_toy(), batch_rows=BATCH, workers=1)
    a, b = _rows(serial, "the_cannon"), _rows(lake, "the_cannon")
    assert a.num_rows == N and a.equals(b)
    # errors: a failure's error row may be there twice (the killed run committed it, then not its result)
    errors = "SELECT DISTINCT spectrum_pk, flag, error FROM task_errors ORDER BY 1"
    assert serial.sql(errors).num_rows > 0 and serial.sql(errors).equals(lake.sql(errors))
    model = "SELECT c.spectrum_pk, m.model_flux, m.continuum FROM model_apogee m JOIN the_cannon c USING (task_pk) ORDER BY 1"
    assert serial.sql(model).equals(lake.sql(model))
