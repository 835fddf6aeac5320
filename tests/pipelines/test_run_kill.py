"""A run killed with SIGKILL at any point and started again ends with exactly one result per spectrum,
one model spectrum per (non-failed) result and no orphans: at chosen writer calls, inside a Delta
commit, and at a random moment of a real ``astra-lake run the_payne``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "payne"
N = 48

# The toy pipeline as the child process and the rerun both see it: teff = median flux, spectra with
# spectrum_pk % 5 == 0 fail, a model spectrum for the others.
TOY = """
import numpy as np
from astra_lake.pipelines.framework import Output, Pipeline

def process(block, model, options):
    pk = block.column("spectrum_pk")
    flux = block.flux.astype(np.float64)
    return Output(columns={"teff": np.median(flux, axis=1)}, failed={int(i): "toy failure" for i in np.flatnonzero(pk % 5 == 0)},
                  model_flux=np.ones_like(flux), continuum=flux)

TOY = Pipeline(name="the_cannon", version="1", inputs=("apogee_star",), process=process, model_table="model_apogee")
"""


def _env() -> dict[str, str]:
    return {**os.environ, "NUMBA_CACHE_DIR": str(ROOT / ".venv" / "numba-cache"), "PYTHONPATH": str(ROOT)}


def _toy() -> object:
    scope: dict[str, object] = {}
    exec(TOY, scope)
    return scope["TOY"]


def _lake(path: Path) -> Lake:
    lake = Lake.init(path)
    src = S.sources(N, seed=11)
    lake.write("source", src)
    lake.write("apogee_star", next(S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=12, batch=N)))
    return lake


def _check_complete(lake: Lake, pipeline: str, failed: set[int], n: int = N) -> None:
    rows = lake.sql(f"SELECT spectrum_pk, task_pk, result_flags FROM {pipeline}").to_pylist()
    pks = [r["spectrum_pk"] for r in rows]
    assert len(pks) == n and len(set(pks)) == n
    models = lake.sql(f"SELECT task_pk, spectrum_pk FROM model_apogee WHERE pipeline = '{pipeline}'").to_pylist()
    by_task = {r["task_pk"]: r["spectrum_pk"] for r in rows}
    assert len(models) == len({m["task_pk"] for m in models}) == n - len(failed)  # one each, no duplicates
    assert all(by_task.get(m["task_pk"]) == m["spectrum_pk"] for m in models)  # no orphans
    assert {r["spectrum_pk"] for r in rows if r["result_flags"] & 1} == failed
    errors = lake.sql(f"SELECT DISTINCT spectrum_pk FROM task_errors WHERE pipeline = '{pipeline}'").column(0).to_pylist()
    assert set(errors) == failed
    runs = lake.sql(f"SELECT status FROM runs WHERE pipeline = '{pipeline}' ORDER BY run_id").column(0).to_pylist()
    assert runs[-1] == "finished" and set(runs[:-1]) <= {"running"}


@pytest.mark.parametrize(
    "target, call",
    [("upsert", 2), ("upsert", 4), ("upsert", 5), ("commit", 3)],
)
def test_killed_at_a_write_then_restarted(tmp_path: Path, target: str, call: int) -> None:
    """Writer.upsert calls of a run (batches of 16): 1 runs row, then per batch model rows, errors,
    results; the run is SIGKILLed on entering call ``call`` (2: nothing of batch 1 written; 4: its
    model rows and errors but not its results; 5: batch 1 complete) or inside the ``call``-th Delta
    commit, after its data files were written."""
    lake = _lake(tmp_path / "lake")
    script = textwrap.dedent(
        f"""
        import os, signal
        from astra_lake import Lake
        from astra_lake.lake import delta_store, writer
        {textwrap.indent(TOY, "        ").strip()}
        owner = writer.Writer if "{target}" == "upsert" else delta_store.DeltaStore
        name = "upsert" if "{target}" == "upsert" else "commit"
        original, calls = getattr(owner, name), [0]
        def deadly(self, *args, **kwargs):
            calls[0] += 1
            if calls[0] == {call}:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *args, **kwargs)
        setattr(owner, name, deadly)
        Lake({str(tmp_path / "lake")!r}).run(TOY, batch_rows=16, workers=1)
        """
    )
    child = subprocess.run([sys.executable, "-c", script], env=_env(), capture_output=True, text=True, timeout=600)
    assert child.returncode == -signal.SIGKILL, child.stderr[-2000:]
    lake = Lake(tmp_path / "lake")
    lake.run(_toy(), batch_rows=16, workers=1)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_pylist()
    _check_complete(lake, "the_cannon", {p for p in pks if p % 5 == 0})


def test_cli_killed_at_a_random_moment_then_restarted(tmp_path: Path) -> None:
    """``astra-lake run the_payne`` on emulated spectra, SIGKILLed once its first results are committed,
    then run again: every spectrum has exactly one result and one model spectrum."""
    from astra_lake.pipelines.emulated import apogee_star_rows
    from astra_lake.pipelines.the_payne import ThePayne

    lake = Lake.init(tmp_path / "lake")
    src = S.sources(N // 2, seed=21)
    lake.write("source", src)
    payne = ThePayne.load(DATA / "NN_normalized_spectra.npz")
    labels = payne.emulator.unscale(np.random.default_rng(22).uniform(-0.3, 0.3, (N // 2, 5)))
    lake.write("apogee_star", apogee_star_rows(payne, src.column("sdss_id").to_numpy(), labels, snr=100.0, seed=23))
    cli = [str(ROOT / ".venv" / "bin" / "astra-lake"), "run", "the_payne", "--lake", str(tmp_path / "lake")]
    cli += ["--model", str(DATA / "NN_normalized_spectra.npz"), "--batch-rows", "4", "--workers", "1"]
    log = tmp_path / "lake" / "the_payne" / "dataset" / "_delta_log"
    child = subprocess.Popen(cli, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while not (log.exists() and any(log.glob("*1.json"))) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(float(np.random.default_rng().uniform(0.0, 1.0)))  # somewhere in the following batches
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=60)
    partial = Lake(tmp_path / "lake").sql("SELECT count(*) FROM the_payne").column(0)[0].as_py()
    assert 0 < partial <= N // 2
    done = subprocess.run(cli, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"{N // 2 - partial} results" in done.stdout and f"{partial} skipped" in done.stdout
    _check_complete(Lake(tmp_path / "lake"), "the_payne", set(), N // 2)
    again = subprocess.run(cli, env=_env(), capture_output=True, text=True, timeout=600)
    assert "nothing to do" in again.stdout
