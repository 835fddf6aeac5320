"""Concurrent writers with overlapping and mixed batches, and readers pinned while compaction and vacuum run."""

from __future__ import annotations

import time
from pathlib import Path

import fault_workers as W
import numpy as np
import pyarrow.compute as pc
import pytest
from faultkit import assert_consistent, rows

from astra_lake import Lake
from astra_lake.ingest import synthetic as S

WRITERS, ROUNDS = 3, 2


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(60, seed=1))
    for batch in S.spectra("apogee_star", W.column(lake, "source", "sdss_id")[:6], seed=2):
        lake.write("apogee_star", batch)
    return lake


def test_concurrent_writers_with_overlapping_and_mixed_batches(procs: object, lake: Lake) -> None:
    shared = W.column(lake, "apogee_star", "spectrum_pk")
    start = time.time() + 1.0  # all writers begin together
    children = [procs.Process(target=W.writer, args=(str(lake.path), w, ROUNDS, start, shared.tolist())) for w in range(WRITERS)]  # type: ignore[attr-defined]
    for c in children:
        c.start()
    for c in children:
        c.join(240)
    assert [c.exitcode for c in children] == [0] * WRITERS

    assert_consistent(lake)  # keys and spectrum_pk / task_pk / source_pk unique, every commit logged once
    assert rows(lake, "apogee_star", ["obj"]).num_rows == 6 + 3 * WRITERS * ROUNDS
    # each writer's upserts over the shared spectra: one result per spectrum, with one writer's values
    results = rows(lake, "aspcap", ["spectrum_pk", "teff"])
    assert sorted(results.column("spectrum_pk").to_pylist()) == sorted(shared.tolist())
    offered = {}
    for w in range(WRITERS):
        for r in range(ROUNDS):
            batch = S.results("aspcap", shared[r % 2 :: 2], v_astra="0.8.1", seed=100 * w + r)
            for pk, teff in zip(batch.column("spectrum_pk").to_pylist(), batch.column("teff").to_pylist(), strict=True):
                offered.setdefault(pk, []).append(teff)
    for pk, teff in zip(results.column("spectrum_pk").to_pylist(), results.column("teff").to_pylist(), strict=True):
        assert any(teff == t or (np.isnan(teff) and np.isnan(t)) for t in offered[pk])
    # sources offered by two writers at once (overlapping keys) are stored once each
    sdss = rows(lake, "source", ["sdss_id"]).column(0)
    assert pc.count_distinct(sdss).as_py() == len(sdss) == 60 + len({int(x) for x in _offered_sources()})
    lake.write("source", S.sources(1, seed=7, first_sdss_id=10**8))  # and the lake takes the next write
    assert_consistent(lake)


def _offered_sources() -> list[int]:
    out: list[int] = []
    for w in range(WRITERS):
        for r in range(ROUNDS):
            first = 9_000_000 + 2 * (w * ROUNDS + r) * 4
            out += S.sources(4, seed=w * 10 + r, first_sdss_id=first).column("sdss_id").to_pylist()
    return out


def test_readers_pinned_during_compaction_and_vacuum_read_what_they_read(procs: object, lake: Lake) -> None:
    pks = W.column(lake, "apogee_star", "spectrum_pk")
    for i in range(4):  # new results in the same leaves: several files per leaf, for compaction to merge
        lake.upsert("aspcap", S.results("aspcap", pks, v_astra=f"0.{8 + i}.0", seed=i))
    lake.tag("pinned")
    lake.upsert("aspcap", S.results("aspcap", pks[:3], v_astra="0.8.0", seed=9))  # the latest moves on
    q = "SELECT count(*), sum(teff) FILTER (WHERE NOT isnan(teff)), min(task_pk), max(spectrum_pk) FROM aspcap"
    readers = {"tag": lake.connect("pinned"), "version": lake.connect(lake.version)}  # the second is untagged
    expected = {name: con.execute(q).fetchall() for name, con in readers.items()}
    for retention_hours, pinned in ((168, ["tag", "version"]), (0, ["tag"])):  # vacuum(0) keeps tags only
        child = procs.Process(target=W.maintain, args=(str(lake.path), retention_hours))  # type: ignore[attr-defined]
        child.start()
        reads = 0
        while child.is_alive() or reads == 0:
            for name in pinned:
                assert readers[name].execute(q).fetchall() == expected[name], name
            reads += 1
        child.join()
        assert child.exitcode == 0
        for name in pinned:
            assert readers[name].execute(q).fetchall() == expected[name], name  # also after the vacuum
    assert [c.operation for c in lake.versions()].count("compact") == 1
    assert lake.sql(q).to_pylist()[0] == dict(zip(lake.sql(q).column_names, expected["version"][0], strict=True))
    assert_consistent(lake)
