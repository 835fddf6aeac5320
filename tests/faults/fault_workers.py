"""What the fault suite's child processes run: lake operations, killed (SIGKILL) at a chosen point.

A *point* names a step of a write and ``k`` which occurrence of it: the k-th leaf file staged, the k-th
Delta commit (before / after it lands), the k-th log line (torn half-way / after it), the k-th sidecar
file, the k-th sequence reservation. Imported by the forkserver, so children start at once.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

import astra_lake.lake.files as files_mod
import astra_lake.lake.hats as hats_mod
from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.ingest.runner import Ingestor, find_files
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.delta_store import DeltaStore
from astra_lake.lake.sequences import Sequences
from astra_lake.schema.loader import load_schema

FIXTURES = Path(__file__).resolve().parent.parent / "data" / "fixtures"
load_schema()  # parsed once in the forkserver, inherited by every child (no threads are started here)
POINTS = ("stage", "stage-torn", "commit-before", "commit-after", "log-torn", "log-after", "sidecars", "sequences")


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _counting(k: int, before: Callable[..., None] | None, after: Callable[..., None] | None, original: Callable[..., Any]):  # type: ignore[no-untyped-def]
    calls = [0]

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] == k and before is not None:
            before(*args, **kwargs)
        out = original(*args, **kwargs)
        if calls[0] == k and after is not None:
            after(*args, **kwargs)
        return out

    return wrapped


def arm(point: str, k: int) -> None:
    """Patch the step ``point`` so that its k-th occurrence kills this process."""
    kill = lambda *a, **kw: die()  # noqa: E731
    if point in ("stage", "stage-torn"):
        original = files_mod.pq.write_table

        def torn(table: Any, where: Any, **kw: Any) -> None:
            original(table, where, **kw)
            size = os.path.getsize(where)
            os.truncate(where, size // 2)  # a leaf file half-written when the writer died
            die()

        torn_at, staged_at = (torn, None) if point == "stage-torn" else (None, kill)
        files_mod.pq.write_table = _counting(k, torn_at, staged_at, original)  # type: ignore[attr-defined]
    elif point in ("commit-before", "commit-after"):
        before, after = (kill, None) if point == "commit-before" else (None, kill)
        DeltaStore.commit = _counting(k, before, after, DeltaStore.commit)  # type: ignore[method-assign]
    elif point in ("log-torn", "log-after"):

        def half_line(self: Catalog, table: str, delta_version: int, operation: str, rows: int = 0) -> None:
            line = json.dumps({"lake_version": len(self.commits()) + 1, "table": table, "delta_version": delta_version})
            with open(self.log_path, "a") as fh:
                fh.write(line[: len(line) // 2])
            die()

        before, after = (half_line, None) if point == "log-torn" else (None, kill)
        Catalog.record = _counting(k, before, after, Catalog.record)  # type: ignore[method-assign]
    elif point == "sidecars":
        hats_mod.atomic_write_text = _counting(k, kill, None, hats_mod.atomic_write_text)
    elif point == "sequences":
        Sequences.reserve = _counting(k, None, kill, Sequences.reserve)  # type: ignore[method-assign]
    else:
        raise ValueError(point)


# -- the operations ---------------------------------------------------------------------------------------
def op_write(lake: Lake) -> None:
    lake.write("source", S.sources(30, seed=11, first_sdss_id=5_000_000))


def column(lake: Lake, table: str, name: str) -> np.ndarray:
    """A column of the latest version, sorted (read from the snapshot's files, without DuckDB)."""
    parts = [pq.read_table(p, columns=[name]).column(0).to_numpy() for p in lake.snapshot().paths(table)]
    return np.sort(np.concatenate(parts)) if parts else np.array([], dtype=np.int64)


def op_upsert(lake: Lake) -> None:
    lake.upsert("aspcap", S.results("aspcap", column(lake, "apogee_star", "spectrum_pk"), v_astra="0.8.5", seed=12))


def op_compact(lake: Lake) -> None:
    lake.compact("source")


def op_ingest(lake: Lake) -> None:
    Ingestor(lake.catalog, workers=1).run(find_files([FIXTURES]))


OPS: dict[str, Callable[[Lake], None]] = {"write": op_write, "upsert": op_upsert, "compact": op_compact, "ingest": op_ingest}


def killed_during(lake_path: str, op: str, point: str, k: int) -> None:
    """Run ``op`` on the lake, killed at the k-th ``point`` (exits normally if the point is not reached)."""
    arm(point, k)
    OPS[op](Lake(lake_path))


# -- concurrent writers and readers ----------------------------------------------------------------------------
def writer(lake_path: str, worker: int, rounds: int, start_at: float, shared: list[int]) -> None:
    """Mixed batches: append this worker's own spectra, upsert results over spectra every worker touches
    (overlapping keys, each worker's own values), and append sources some of which another worker also offers.
    ``shared`` comes from the parent: a worker started late would otherwise also see other workers' spectra."""
    lake = Lake(lake_path)
    time.sleep(max(0.0, start_at - time.time()))
    ids = column(lake, "source", "sdss_id")
    shared = np.asarray(shared, dtype=np.int64)
    for r in range(rounds):
        mine = ids[20 + (worker * rounds + r) * 3 : 20 + (worker * rounds + r) * 3 + 3]
        for batch in S.spectra("apogee_star", mine, seed=1000 * worker + r):
            lake.write("apogee_star", batch)
        lake.upsert("aspcap", S.results("aspcap", shared[r % 2 :: 2], v_astra="0.8.1", seed=100 * worker + r))
        new = S.sources(4, seed=worker * 10 + r, first_sdss_id=9_000_000 + 2 * (worker * rounds + r) * 4)
        lake.upsert("source", new)


def maintain(lake_path: str, retention_hours: float) -> None:
    """Compaction, then vacuum, while readers read."""
    lake = Lake(lake_path)
    lake.compact()
    lake.vacuum(retention_hours=retention_hours, dry_run=False)
