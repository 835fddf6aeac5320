"""Concurrent writer processes and a writer killed mid-commit."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np

from astra_lake import Lake
from astra_lake.ingest import synthetic as S

WRITER = textwrap.dedent(
    """
    import sys, numpy as np
    from astra_lake import Lake
    from astra_lake.ingest import synthetic as S
    lake = Lake(sys.argv[1]); worker = int(sys.argv[2]); rounds = int(sys.argv[3])
    ids = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()
    for r in range(rounds):
        mine = ids[(worker * rounds + r) * 5 : (worker * rounds + r) * 5 + 5]
        for b in S.spectra("apogee_star", mine, seed=worker * 100 + r):
            lake.write("apogee_star", b)
    """
)


def test_concurrent_writers_get_unique_spectrum_pks(tmp_path: Path) -> None:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(200, seed=1))
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(lake.path), str(w), "4"]) for w in range(3)]
    assert [p.wait(timeout=300) for p in procs] == [0, 0, 0]
    got = lake.sql("SELECT count(*), count(DISTINCT spectrum_pk), count(DISTINCT sdss_id) FROM apogee_star").to_pylist()[0]
    assert list(got.values()) == [60, 60, 60]
    assert len([c for c in lake.versions() if c.table == "apogee_star"]) == 12


KILLED = textwrap.dedent(
    """
    import os, sys, signal
    from astra_lake import Lake
    from astra_lake.ingest import synthetic as S
    import astra_lake.lake.delta_store as ds
    original = ds.DeltaStore.commit
    def commit_then_die(self, *a, **k):
        if os.environ.get("DIE") == "before":
            os.kill(os.getpid(), signal.SIGKILL)
        v = original(self, *a, **k)
        os.kill(os.getpid(), signal.SIGKILL)  # after the Delta commit, before the lake log line
    ds.DeltaStore.commit = commit_then_die
    lake = Lake(sys.argv[1])
    ids = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()[:20]
    lake.upsert("apogee_star", next(S.spectra("apogee_star", ids, seed=7)))
    """
)


def _run_killed(path: Path, when: str) -> int:
    env = dict(os.environ, DIE=when)
    return subprocess.run([sys.executable, "-c", KILLED, str(path)], env=env, timeout=300).returncode


def test_sigkill_before_commit_leaves_previous_version(tmp_path: Path) -> None:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(50, seed=1))
    assert _run_killed(lake.path, "before") == -signal.SIGKILL
    assert lake.info()["tables"].get("apogee_star", {"rows": 0})["rows"] == 0
    assert lake.sql("SELECT count(*) FROM source").column(0)[0].as_py() == 50
    # a rerun completes, and the orphan files of the dead writer are never visible
    ids = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()[:20]
    lake.upsert("apogee_star", next(S.spectra("apogee_star", ids, seed=7)))
    assert lake.sql("SELECT count(*), count(DISTINCT obj) FROM apogee_star").to_pylist()[0] == {
        "count_star()": 20,
        "count(DISTINCT obj)": 20,
    }


def test_sigkill_after_commit_is_recovered_without_duplicates(tmp_path: Path) -> None:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(50, seed=1))
    assert _run_killed(lake.path, "after") == -signal.SIGKILL
    assert lake.sql("SELECT count(*) FROM apogee_star").column(0)[0].as_py() == 20  # the commit landed
    ids = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()[:20]
    time.sleep(0.01)
    lake.upsert("apogee_star", next(S.spectra("apogee_star", ids, seed=7)))  # rerun: replaces, never duplicates
    rows = lake.sql("SELECT count(*) AS n, count(DISTINCT spectrum_pk) AS k FROM apogee_star").to_pylist()[0]
    assert rows == {"n": 20, "k": 20}
    assert [(c.operation, c.rows) for c in lake.versions()][-2:] == [("recovered upsert", 20), ("upsert", 20)]
    assert np.all(np.diff([c.lake_version for c in lake.versions()]) == 1)
