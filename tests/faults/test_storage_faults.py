"""A full disk, read-only directories and files, a lock the user may not take: one clear error each,
nothing half-written, and the lake takes the next write once the fault is gone.

A full disk and read-only places are real (a small tmpfs, read-only bind mounts: chmod does not stop
root); they need ``mount`` and are skipped where it is not permitted.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import assert_consistent, on_disk, read_only, resize, rows, tmpfs

from astra_lake import Lake
from astra_lake.errors import CommittedWithErrorsError, StorageError
from astra_lake.ingest import synthetic as S


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(30, seed=1))
    lake.tag("t0")
    return lake


def _n(lake: Lake, version: int | str | None = None) -> int:
    return rows(lake, "source", ["sdss_id"], version).num_rows


def _batch(i: int, n: int = 20) -> object:
    return S.sources(n, seed=100 + i, first_sdss_id=(i + 1) * 10**6)


def test_a_read_only_delta_log_leaves_no_staged_files(lake: Lake, can_mount: None) -> None:
    before = on_disk(lake, "source")
    with read_only(lake.path / "source" / "dataset" / "_delta_log"):
        with pytest.raises(StorageError, match=r"_delta_log: cannot commit to source \(read-only file system\)") as err:
            lake.write("source", _batch(1))
        assert "\n" not in str(err.value)
        assert on_disk(lake, "source") == before  # the staged files went with the refused commit
    lake.write("source", _batch(1))
    assert _n(lake) == 50
    assert_consistent(lake)


def test_a_read_only_log_reports_the_commit_and_refuses_until_it_is_writable(lake: Lake, can_mount: None) -> None:
    log = lake.catalog.log_path
    with read_only(log):
        with pytest.raises(CommittedWithErrorsError, match=r"committed as Delta version 2, but its line in .*log.jsonl") as err:
            lake.upsert("source", _batch(1))
        assert (err.value.delta_version, err.value.lake_version) == (2, None)
        assert _n(lake) == 50  # the data is stored
        for call in (lambda: lake.upsert("source", _batch(1)), lambda: lake.tag("t1"), lake.versions):
            with pytest.raises(StorageError, match=r"log.jsonl: cannot write \(read-only file system\)"):
                call()  # the log cannot be repaired: refused before acting
        assert lake.catalog.store("source").latest_version() == 2  # nothing more was committed
    lake.upsert("source", _batch(1))  # the same call again, once the log is writable
    assert _n(lake) == 50
    assert [c.operation for c in lake.versions()] == ["append", "recovered upsert", "upsert"]
    assert_consistent(lake)


def test_a_read_only_lake_reads_and_refuses_writes_in_one_line(lake: Lake, can_mount: None) -> None:
    with read_only(lake.path):
        with pytest.raises(StorageError, match=r"_meta/write.lock: cannot take the lock \(read-only file system\)"):
            lake.write("source", _batch(1))
        assert _n(lake) == 30 and len(lake.versions()) == 1 and lake.info()["version"] == 1
        assert lake.sql("SELECT count(*) FROM source").column(0)[0].as_py() == 30
    lake.write("source", _batch(1))
    assert _n(lake) == 50


@contextlib.contextmanager
def _not_allowed(lake: Lake) -> Iterator[None]:
    """Writing ``_meta`` denied: another user, for root (chmod does not stop root), else no permission bit."""
    meta = lake.path / "_meta"
    (meta / "write.lock").unlink(missing_ok=True)
    if os.geteuid() == 0:
        os.seteuid(65534)  # nobody; the real user id stays root, so this is undone below
        try:
            yield
        finally:
            os.seteuid(0)
    else:
        mode = meta.stat().st_mode
        meta.chmod(stat.S_IRUSR | stat.S_IXUSR)
        try:
            yield
        finally:
            meta.chmod(mode)


def test_permission_denied_on_the_lock_is_one_line(lake: Lake) -> None:
    with _not_allowed(lake), pytest.raises(StorageError, match=r"_meta/write.lock: cannot take the lock \(permission denied\)"):
        lake.write("source", _batch(1))
    lake.write("source", _batch(1))
    assert _n(lake) == 50


def test_a_full_disk_ends_clean_and_the_lake_takes_the_next_write(tmp_path: Path, can_mount: None) -> None:
    with tmpfs(tmp_path / "disk", "2m") as disk:
        lake = Lake.init(disk / "lake")
        lake.write("source", _batch(0))
        lake.tag("t0")
        stored = 20
        with pytest.raises((StorageError, CommittedWithErrorsError), match="no space left on device") as err:
            for i in range(1, 200):
                lake.write("source", _batch(i))
                stored += 20
        assert "\n" not in str(err.value)
        if isinstance(err.value, CommittedWithErrorsError):  # the data's commit landed, a step after it did not
            stored += 20
        resize(disk, "64m")
        assert_consistent(lake)
        assert _n(lake) == stored and _n(lake, "t0") == 20
        referenced = {p for v in range(lake.version + 1) for p in lake.snapshot(v).paths("source")}
        assert on_disk(lake, "source") == referenced  # nothing staged was left behind
        lake.write("source", _batch(500))
        assert _n(lake) == stored + 20
        assert_consistent(lake)
