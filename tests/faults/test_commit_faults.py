"""Faults around a commit: what is committed is said exactly, staged files never stay, retries are safe."""

from __future__ import annotations

import datetime as dt
import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from faultkit import assert_consistent, on_disk, rows

import astra_lake.lake.files as files_mod
import astra_lake.lake.hats as hats_mod
import astra_lake.lake.writer as writer_mod
from astra_lake import Lake
from astra_lake.errors import CommittedWithErrorsError, InvalidArgumentError, StorageError
from astra_lake.ingest import synthetic as S
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.files import write_leaf_files


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(30, seed=1))
    return lake


def _failing(error: OSError, original: Callable[..., Any] | None = None, *, on_call: int = 1) -> Callable[..., Any]:
    """A stand-in that raises ``error`` on its ``on_call``-th call (after calling ``original``, if given)."""
    calls = [0]

    def run(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        if calls[0] != on_call:
            return original(*args, **kwargs) if original else None
        if original is not None:
            original(*args, **kwargs)
        raise error

    return run


def _unreferenced(lake: Lake, table: str) -> set[str]:
    return on_disk(lake, table) - {p for v in range(lake.version + 1) for p in lake.snapshot(v).paths(table)}


NEW = S.sources(12, seed=5, first_sdss_id=10**6)


def test_a_failed_log_append_says_what_was_committed_and_a_retry_is_safe(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    log = str(lake.catalog.log_path)
    monkeypatch.setattr(Catalog, "record", _failing(OSError(errno.EROFS, "Read-only file system", log)))
    with pytest.raises(
        CommittedWithErrorsError, match=r"source: upsert of 12 rows committed as Delta version 2.*log.jsonl.*read-only"
    ) as err:
        lake.upsert("source", NEW)
    assert (err.value.table, err.value.delta_version, err.value.lake_version, err.value.rows) == ("source", 2, None, 12)
    assert rows(lake, "source", ["sdss_id"]).num_rows == 42  # committed: readers see it
    monkeypatch.undo()
    lake.upsert("source", NEW)  # the same call again
    assert rows(lake, "source", ["sdss_id"]).num_rows == 42
    assert [c.operation for c in lake.versions()] == ["append", "recovered upsert", "upsert"]
    assert_consistent(lake)


def test_a_failed_automatic_compaction_says_what_was_committed_and_a_retried_write_is_safe(
    lake: Lake, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(writer_mod, "compact", _failing(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(CommittedWithErrorsError, match=r"append of 12 rows committed as lake version 2.*compaction") as err:
        lake.write("source", NEW)
    assert (err.value.lake_version, err.value.delta_version, err.value.operation) == (2, 2, "append")
    monkeypatch.undo()
    assert lake.write("source", NEW) == 2  # a retry: the rows are stored as offered, nothing to do
    assert rows(lake, "source", ["sdss_id"]).num_rows == 42 and lake.version == 2
    assert_consistent(lake)


def test_a_commit_that_does_not_land_leaves_no_staged_file(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import DeltaTable

    before = on_disk(lake, "source")
    monkeypatch.setattr(DeltaTable, "create_write_transaction", _failing(OSError("Generic LocalFileSystem error")))
    with pytest.raises(StorageError, match=r"source/dataset/_delta_log: cannot commit to source"):
        lake.write("source", NEW)
    assert on_disk(lake, "source") == before  # the staged leaf files went with the failed commit
    assert lake.version == 1
    monkeypatch.undo()
    lake.write("source", NEW)
    assert rows(lake, "source", ["sdss_id"]).num_rows == 42


def test_a_commit_that_lands_before_a_later_step_fails_is_kept_and_reported(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    from deltalake import DeltaTable

    failing = _failing(OSError("checkpoint failed"), DeltaTable.create_write_transaction)
    monkeypatch.setattr(DeltaTable, "create_write_transaction", failing)
    with pytest.raises(
        CommittedWithErrorsError, match=r"committed as Delta version 2 \(lake version 2\), but a step after"
    ) as err:
        lake.write("source", NEW)
    assert err.value.lake_version == 2
    monkeypatch.undo()
    assert rows(lake, "source", ["sdss_id"]).num_rows == 42  # its files were kept
    assert _unreferenced(lake, "source") == set()
    assert_consistent(lake)


def test_a_failure_after_the_commit_in_the_same_call_says_what_was_committed(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        hats_mod, "atomic_write_text", _failing(OSError(errno.ENOSPC, "No space left on device", "hats.properties"))
    )
    with pytest.raises(
        CommittedWithErrorsError, match=r"committed source append of 12 rows as lake version 2; then .*no space left"
    ) as err:
        lake.write("source", NEW)
    assert err.value.lake_version == 2 and "\n" not in str(err.value)


def test_staging_that_fails_half_way_leaves_no_file(lake: Lake, monkeypatch: pytest.MonkeyPatch) -> None:
    before = on_disk(lake, "source")
    original = files_mod.pq.write_table

    def third_fails(table: pa.Table, where: Any, **kw: Any) -> None:
        third_fails.calls += 1  # type: ignore[attr-defined]
        if third_fails.calls == 3:  # type: ignore[attr-defined]
            Path(where).write_bytes(b"PAR1 half a file")
            raise OSError(errno.ENOSPC, "No space left on device")
        original(table, where, **kw)

    third_fails.calls = 0  # type: ignore[attr-defined]
    monkeypatch.setattr(files_mod.pq, "write_table", third_fails)
    with pytest.raises(StorageError, match="no space left on device"):
        lake.write("source", NEW)
    assert third_fails.calls >= 3  # leaves are written in parallel: the others may still be written, then deleted  # type: ignore[attr-defined]
    assert on_disk(lake, "source") == before


def test_vacuum_lists_files_of_killed_writers_at_the_default_retention(lake: Lake) -> None:
    store = lake.catalog.store("source")
    orphans = {store.abspath(f) for f in write_leaf_files(store, _storage_rows(lake))}  # staged, never committed
    assert orphans and orphans <= on_disk(lake, "source")
    assert set(lake.vacuum(dry_run=True)["source"]) == orphans
    lake.vacuum(dry_run=False)
    assert not orphans & on_disk(lake, "source")
    assert rows(lake, "source", ["sdss_id"]).num_rows == 30


@pytest.mark.parametrize("hours", [-5, -0.5, float("nan"), "168", True])
def test_vacuum_refuses_a_retention_that_is_not_hours(lake: Lake, hours: object) -> None:
    with pytest.raises(InvalidArgumentError, match="retention_hours must be a number of hours >= 0"):
        lake.vacuum(retention_hours=hours)  # type: ignore[arg-type]


def _storage_rows(lake: Lake) -> pa.Table:
    from astra_lake.lake.conform import conform

    tbl = lake.catalog.schema.table("source")
    data = conform(tbl, S.sources(5, seed=8, first_sdss_id=7 * 10**6))
    writer = writer_mod.Writer(lake.catalog)
    return writer._mint(tbl, writer._prepare(tbl, data, dt.datetime.now(dt.UTC)))
