"""Snapshots, upsert semantics, compaction, tags and vacuum."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.errors import VersionNotFoundError
from astra_lake.ingest import synthetic as S
from astra_lake.lake.delta_store import DataFile


def _count(lake: Lake, table: str, version: int | str | None = None) -> int:
    return int(lake.sql(f"SELECT count(*) FROM {table}", version).column(0)[0].as_py())


def test_reader_pinned_to_a_version_is_unaffected(populated: Lake) -> None:
    pinned = populated.connect(populated.version)
    q = "SELECT count(*), sum(teff) FILTER (WHERE NOT isnan(teff)) FROM aspcap"
    before = pinned.execute(q).fetchone()
    pks = populated.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()[:30]
    populated.upsert("aspcap", S.results("aspcap", pks, v_astra="0.9.0", seed=9))
    populated.compact()
    assert pinned.execute(q).fetchone() == before
    assert _count(populated, "aspcap") == 150


def test_upsert_keeps_task_pk_and_created(populated: Lake) -> None:
    old = populated.sql("SELECT spectrum_pk, task_pk, created, modified FROM aspcap ORDER BY spectrum_pk").to_pylist()
    pks = np.array([r["spectrum_pk"] for r in old[:40]])
    time.sleep(0.01)
    redo = S.results("aspcap", pks, v_astra="0.8.3", seed=11)  # same major.minor: replaces
    populated.upsert("aspcap", redo)
    new = {
        r["spectrum_pk"]: r
        for r in populated.sql("SELECT spectrum_pk, task_pk, created, modified, v_astra, teff FROM aspcap").to_pylist()
    }
    assert len(new) == 120
    for r in old[:40]:
        n = new[r["spectrum_pk"]]
        assert n["task_pk"] == r["task_pk"] and n["created"] == r["created"] and n["modified"] > r["modified"]
        assert n["v_astra"] == 8003
    teff = dict(zip(redo.column("spectrum_pk").to_pylist(), redo.column("teff").to_pylist(), strict=True))
    assert all((np.isnan(teff[k]) and np.isnan(new[k]["teff"])) or teff[k] == pytest.approx(new[k]["teff"]) for k in teff)
    # a new major.minor is a new result
    populated.upsert("aspcap", S.results("aspcap", pks[:5], v_astra="0.9.0", seed=12))
    assert _count(populated, "aspcap") == 125


def test_upsert_mixing_new_and_existing_rows(populated: Lake) -> None:
    """Rows already in the lake keep task_pk/created; new rows get fresh ones; every row is modified now."""
    populated.upsert("astronn", S.results("astronn", np.arange(0), seed=1))  # empty batches write nothing
    pks = populated.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    q = "SELECT spectrum_pk, task_pk, created, modified FROM the_payne ORDER BY spectrum_pk"
    populated.upsert("the_payne", S.results("the_payne", pks[:30], seed=21))
    before = {r["spectrum_pk"]: r for r in populated.sql(q).to_pylist()}
    time.sleep(0.01)
    populated.upsert("the_payne", S.results("the_payne", pks[20:50], seed=22))
    after = {r["spectrum_pk"]: r for r in populated.sql(q).to_pylist()}
    assert sorted(after) == sorted(int(p) for p in pks[:50])
    replaced, new = [int(p) for p in pks[20:30]], [int(p) for p in pks[30:50]]
    for p in replaced:
        assert (after[p]["task_pk"], after[p]["created"]) == (before[p]["task_pk"], before[p]["created"])
        assert after[p]["modified"] > before[p]["modified"]
    fresh = [after[p]["task_pk"] for p in new]
    assert len(set(fresh)) == 20 and min(fresh) > max(r["task_pk"] for r in before.values())
    assert all(after[p]["created"] == after[p]["modified"] > before[pks[0]]["modified"] for p in new)


def test_compaction_never_double_counts(populated: Lake) -> None:
    for seed in range(3):
        pks = populated.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()[seed * 10 : seed * 10 + 10]
        populated.upsert("aspcap", S.results("aspcap", pks, v_astra=f"0.{9 + seed}.0", seed=seed))
    before = _count(populated, "aspcap")
    files_before = populated.info()["tables"]["aspcap"]["files"]
    stats = populated.compact("aspcap")["aspcap"]
    assert stats["files_removed"] > stats["files_added"] > 0
    assert populated.info()["tables"]["aspcap"]["files"] < files_before
    assert _count(populated, "aspcap") == before == 150
    assert populated.scan("aspcap").collect().height == 150


def test_tags_survive_vacuum(populated: Lake) -> None:
    populated.tag("dr20")
    q = "SELECT sum(teff) FILTER (WHERE NOT isnan(teff)) AS s, count(*) AS n FROM aspcap"
    at_tag = populated.sql(q, "dr20").to_pylist()
    pks = populated.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()
    populated.upsert("aspcap", S.results("aspcap", pks, v_astra="0.8.9", seed=21))  # rewrites every file
    populated.upsert("aspcap", S.results("aspcap", pks, v_astra="0.8.10", seed=22))  # ... and again (untagged)
    deleted = populated.vacuum(retention_hours=0, dry_run=False)
    assert sum(len(v) for v in deleted.values()) > 0
    assert populated.sql(q, "dr20").to_pylist() == at_tag
    assert populated.sql(q).to_pylist() != at_tag
    with pytest.raises(ValueError, match="immutable"):
        populated.tag("dr20")
    with pytest.raises(VersionNotFoundError, match="no tag"):
        populated.connect("dr99")


def test_old_untagged_versions_go_with_vacuum(populated: Lake) -> None:
    v = populated.version
    pks = populated.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()
    populated.upsert("aspcap", S.results("aspcap", pks, v_astra="0.8.9", seed=21))
    populated.vacuum("aspcap", retention_hours=0, dry_run=False)
    with pytest.raises(VersionNotFoundError, match=f"lake version {v} is no longer readable: vacuum deleted"):
        populated.sql("SELECT sum(teff) FROM aspcap", v)
    with pytest.raises(VersionNotFoundError, match="no longer readable"):
        populated.scan("aspcap", v)


def test_versions_log(populated: Lake) -> None:
    log = populated.versions()
    assert [c.lake_version for c in log] == list(range(1, len(log) + 1))
    assert [c.table for c in log[:2]] == ["source", "apogee_star"]
    assert log[-1].operation == "upsert" and log[-1].rows == 120


def _one_leaf_sources(lake: Lake, n: int) -> np.ndarray:
    src = S.sources(n, seed=1)
    for name, value in (("ra", 120.0), ("dec", -5.0)):  # every source in one leaf
        src = src.set_column(src.column_names.index(name), name, pa.array(np.full(n, value)))
    lake.write("source", src)
    return src.column("sdss_id").to_numpy()


def test_compaction_merges_in_bounded_groups(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    """However large a leaf, compaction reads at most about COMPACT_TARGET_BYTES at a time."""
    from astra_lake.lake import maintenance

    marker = lake.path / "lake.json"
    marker.write_text(json.dumps(json.loads(marker.read_text()) | {"auto_compact_min_files": 0}))
    ids = _one_leaf_sources(lake, 60)
    for i in range(6):
        lake.write("apogee_star", next(iter(S.spectra("apogee_star", ids[i * 10 : i * 10 + 10], seed=i))))
    sizes = [f.size for f in lake.snapshot().files("apogee_star")]
    monkeypatch.setattr(maintenance, "COMPACT_TARGET_BYTES", int(2.5 * max(sizes)))  # two files per group
    stats = lake.compact("apogee_star")["apogee_star"]
    assert stats == {"leaves": 1, "files_removed": 6, "files_added": 3}
    assert _count(lake, "apogee_star") == 60
    assert all(f.size < 2.5 * max(sizes) for f in lake.snapshot().files("apogee_star"))


def test_writes_that_leave_many_files_in_a_leaf_trigger_a_compaction(lake: Lake) -> None:
    """The automatic policy: the write is its own version, then the crowded leaves are merged."""
    ids = _one_leaf_sources(lake, 30)
    (lake.path / "lake.json").write_text(
        json.dumps(json.loads((lake.path / "lake.json").read_text()) | {"auto_compact_min_files": 3})
    )
    for i in range(3):
        lake.write("apogee_star", next(iter(S.spectra("apogee_star", ids[i * 10 : i * 10 + 10], seed=i))))
    ops = [c.operation for c in lake.versions() if c.table == "apogee_star"]
    assert ops == ["append", "append", "append", "compact"]
    files = lake.snapshot().files("apogee_star")
    assert len({f.npix for f in files}) == len(files)  # one file per leaf again
    assert _count(lake, "apogee_star") == 30
    assert _count(lake, "apogee_star", version=lake.version - 1) == 30  # the write's own version, same rows


@settings(max_examples=300, deadline=None)
@given(sizes=st.lists(st.integers(1, 10**9), min_size=1, max_size=40))
def test_tier_takes_the_smallest_files_up_to_the_first_one_much_larger(sizes: list[int]) -> None:
    from astra_lake.lake.maintenance import tier

    files = [DataFile(f"f{i}", s, 1, 2, 0) for i, s in enumerate(sizes)]
    chosen = [f.size for f in tier(files)]
    ordered = sorted(sizes)
    assert chosen == ordered[: len(chosen)] and chosen
    assert all(s <= 2 * sum(chosen[:i]) for i, s in enumerate(chosen) if i)
    if len(chosen) < len(sizes):
        assert ordered[len(chosen)] > 2 * sum(chosen)


def test_tiered_merging_rewrites_each_row_a_logarithmic_number_of_times() -> None:
    """Appending n equal files to one leaf with the automatic policy (merge the tier once the leaf has 8
    files) rewrites about log(n) times the data written, where merging everything would be about n/8."""
    from astra_lake.lake.maintenance import tier

    def rewritten(n: int, pick: Callable[[list[DataFile]], list[DataFile]]) -> float:
        leaf: list[DataFile] = []
        copied = 0
        for i in range(n):
            assert len(leaf) <= 8 + np.log2(n)  # the leaf stays cheap to scan
            leaf.append(DataFile(f"w{i}", 100, 1, 2, 0))
            if len(leaf) >= 8:
                merge = pick(leaf)
                if len(merge) > 1:
                    copied += sum(f.size for f in merge)
                    leaf = [f for f in leaf if f not in merge] + [DataFile(f"m{i}", sum(f.size for f in merge), 1, 2, 0)]
        return copied / (100 * n)

    assert rewritten(4096, lambda files: files) > 250  # everything, every 7th write: quadratic in total
    for n in (256, 1024, 4096):
        assert rewritten(n, tier) <= np.log2(n)


def test_checkpoints_keep_every_version_readable_and_other_writers_visible(lake: Lake) -> None:
    """Delta itself writes a checkpoint every CHECKPOINT_EVERY commits (the table's delta.checkpointInterval,
    honoured by commits through create_write_transaction); time travel still reaches each version, and a
    reader's cached table handle sees commits made through another handle."""
    from deltalake import DeltaTable

    from astra_lake.lake.delta_store import CHECKPOINT_EVERY

    src = S.sources(2 * CHECKPOINT_EVERY + 2, seed=2)
    for i in range(src.num_rows):
        lake.write("source", src.slice(i, 1))
    log = lake.path / "source" / "dataset" / "_delta_log"
    assert DeltaTable(str(log.parent)).metadata().configuration["delta.checkpointInterval"] == str(CHECKPOINT_EVERY)
    checkpoints = sorted(int(p.name.split(".")[0]) for p in log.glob("*.checkpoint.parquet"))
    assert len(checkpoints) == 2 and checkpoints[1] - checkpoints[0] == CHECKPOINT_EVERY  # every 10th commit
    assert checkpoints[0] in (CHECKPOINT_EVERY - 1, CHECKPOINT_EVERY)  # counting the table's creation, or not
    rows = [sum(f.num_rows for f in lake.snapshot(v).files("source")) for v in range(1, lake.version + 1)]
    assert rows == list(range(1, src.num_rows + 1))  # time travel across the checkpoints
    assert [_count(lake, "source", v) for v in (checkpoints[0], checkpoints[0] + 1)] == [checkpoints[0], checkpoints[0] + 1]
    other = Lake(lake.path)
    other.write("source", S.sources(1, seed=3, first_sdss_id=10**6))
    assert _count(lake, "source") == src.num_rows + 1
