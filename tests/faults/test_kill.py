"""kill -9 at seeded random points of write / upsert / compact / ingest: the lake ends clean every time.

After each kill: the log is whole and names every Delta commit, keys and identities are unique, every
table holds its rows from before or from after the operation (never a mix), the tag made before still
reads what it read, vacuum's dry run (default retention) lists exactly the files the dead writer left, and
running the operation again gives the state an undisturbed run gives.
"""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import fault_workers as W
import numpy as np
import pyarrow as pa
import pytest
from faultkit import assert_consistent, assert_no_orphans_after_vacuum, rows, run_child

from astra_lake import Lake
from astra_lake.ingest import synthetic as S

# How often each step happens in each operation on the base lake (measured): k is drawn within these.
REACHED = {
    "write": {"stage": 10, "commit": 1, "log": 1, "sidecars": 2, "sequences": 1},
    "upsert": {"stage": 5, "commit": 1, "log": 1, "sidecars": 2},
    "compact": {"stage": 8, "commit": 1, "log": 1, "sidecars": 2},
    "ingest": {"stage": 8, "commit": 6, "log": 6, "sidecars": 12, "sequences": 5},
}
STEP = {"stage-torn": "stage", "commit-before": "commit", "commit-after": "commit", "log-torn": "log", "log-after": "log"}


def _cases(per_op: int, seed: int) -> list[tuple[str, str, int]]:
    """``per_op`` different points of every operation, each at a random occurrence."""
    rng = np.random.default_rng(seed)
    out = []
    for op, reached in REACHED.items():
        points = [p for p in W.POINTS if STEP.get(p, p) in reached]
        for point in rng.permutation(points)[:per_op]:
            out.append((op, str(point), int(rng.integers(1, reached[STEP.get(point, point)] + 1))))
    return out


CASES = _cases(3, seed=20261128)


def _state(lake: Lake, version: int | str | None = None) -> dict[str, pa.Table]:
    """Natural keys of every table, sorted (identities may differ between runs: killed writers leave gaps)."""
    out = {}
    for table in lake.catalog.existing_tables():
        key = list(lake.catalog.schema.table(table).upsert_key)
        out[table] = rows(lake, table, key, version).sort_by([(k, "ascending") for k in key])
    return out


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Sources in several files per leaf, twelve APOGEE spectra with ASPCAP results, and a tag ``t0``."""
    lake = Lake.init(tmp_path_factory.mktemp("kill") / "base")
    for i in range(3):
        lake.write("source", S.sources(40, seed=i, first_sdss_id=1_000_000 * (i + 1)))
    for batch in S.spectra("apogee_star", W.column(lake, "source", "sdss_id")[:12], seed=4):
        lake.write("apogee_star", batch)
    lake.upsert("aspcap", S.results("aspcap", W.column(lake, "apogee_star", "spectrum_pk"), seed=5))
    lake.tag("t0")
    return lake.path


@pytest.fixture(scope="module")
def reference(base: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, pa.Table]]:
    """The state after each operation, run without a fault."""
    out = {}
    for op in REACHED:
        path = tmp_path_factory.mktemp(f"ref-{op}") / "lake"
        shutil.copytree(base, path)
        W.OPS[op](Lake(path))
        out[op] = _state(Lake(path))
    return out


@pytest.mark.parametrize(("op", "point", "k"), CASES, ids=[f"{o}-{p}-{k}" for o, p, k in CASES])
def test_kill_at_a_random_point_ends_clean(
    procs: object, base: Path, reference: dict[str, dict[str, pa.Table]], tmp_path: Path, op: str, point: str, k: int
) -> None:
    path = tmp_path / "lake"
    shutil.copytree(base, path)
    before = _state(Lake(path))
    tagged = rows(Lake(path), "aspcap", ["spectrum_pk", "teff", "task_pk"], "t0")

    assert run_child(procs, W.killed_during, str(path), op, point, k) == -signal.SIGKILL

    lake = Lake(path)
    assert_consistent(lake)
    after = reference[op]
    for table, keys in _state(lake).items():
        assert keys.equals(before.get(table, keys.slice(0, 0))) or keys.equals(after[table]), table
    assert rows(lake, "aspcap", ["spectrum_pk", "teff", "task_pk"], "t0").equals(tagged)
    assert_no_orphans_after_vacuum(lake)

    W.OPS[op](lake)  # the lake accepts the next write: the same operation again ends as an undisturbed run
    assert_consistent(lake)
    assert {t: v for t, v in _state(lake).items() if v.num_rows} == {t: v for t, v in after.items() if v.num_rows}
