"""The lake log: a torn last line, Delta commits without their line, vacuum's own commits, damage."""

from __future__ import annotations

import json

import pytest
from faultkit import assert_consistent, rows

from astra_lake import Lake
from astra_lake.errors import StorageError
from astra_lake.ingest import synthetic as S


@pytest.fixture()
def lake(tmp_path) -> Lake:  # type: ignore[no-untyped-def]
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(20, seed=1))
    lake.write("source", S.sources(10, seed=2, first_sdss_id=10**6))
    return lake


def test_a_torn_last_line_is_dropped_and_re_derived(lake: Lake) -> None:
    log = lake.catalog.log_path
    whole = log.read_bytes()
    last = whole.splitlines()[-1]
    log.write_bytes(whole[: -len(last) - 1] + last[: len(last) // 2])  # a writer died while appending it
    assert [c.lake_version for c in lake.versions()] == [1, 2]  # versions: repaired, not a JSONDecodeError
    assert lake.versions()[-1].operation == "recovered append" and lake.versions()[-1].rows == 10
    assert lake.info()["version"] == 2
    lake.write("source", S.sources(5, seed=3, first_sdss_id=2 * 10**6))
    assert_consistent(lake)
    assert [json.loads(line)["lake_version"] for line in log.read_bytes().splitlines()] == [1, 2, 3]


def test_a_write_after_a_torn_line_never_glues_onto_it(lake: Lake) -> None:
    with open(lake.catalog.log_path, "ab") as fh:
        fh.write(b'{"lake_version": 3, "tab')  # torn, and no Delta commit behind it
    lake.write("source", S.sources(5, seed=3, first_sdss_id=2 * 10**6))
    assert_consistent(lake)
    assert [c.operation for c in lake.versions()] == ["append", "append", "append"]


def test_log_lag_is_repaired_before_tag_versions_and_info(lake: Lake) -> None:
    """A Delta commit without its log line (a writer killed in between): tags pin what readers see."""
    log = lake.catalog.log_path
    log.write_bytes(b"".join(line + b"\n" for line in log.read_bytes().splitlines()[:-1]))
    latest = rows(lake, "source", ["sdss_id"]).num_rows
    assert latest == 30  # readers of the latest version see the unlogged commit (Delta is the truth)
    entry = lake.tag("now")
    assert entry["lake_version"] == 2 and entry["tables"] == {"source": 2}
    assert rows(lake, "source", ["sdss_id"], "now").num_rows == latest
    assert [(c.operation, c.rows) for c in lake.versions()] == [("append", 20), ("recovered append", 10)]
    assert lake.info()["version"] == 2


@pytest.mark.parametrize("reader", ["versions", "info"])
def test_versions_and_info_repair_the_log(lake: Lake, reader: str) -> None:
    log = lake.catalog.log_path
    log.write_bytes(log.read_bytes().splitlines(keepends=True)[0])
    out = getattr(lake, reader)()
    assert (len(out) if reader == "versions" else out["version"]) == 2
    assert len(log.read_bytes().splitlines()) == 2


def test_vacuums_own_commits_are_logged_as_vacuum(lake: Lake) -> None:
    lake.upsert("source", S.sources(20, seed=1))  # replaces every row: the first files become garbage
    lake.vacuum(retention_hours=0, dry_run=False)
    ops = [c.operation for c in lake.versions()]
    assert ops[:3] == ["append", "append", "upsert"] and set(ops[3:]) == {"vacuum"} and len(ops) > 3
    lake.write("source", S.sources(1, seed=9, first_sdss_id=3 * 10**6))
    assert not any("recovered" in c.operation for c in lake.versions())
    assert_consistent(lake)


def test_a_damaged_line_in_the_middle_is_a_clear_error(lake: Lake) -> None:
    log = lake.catalog.log_path
    lines = log.read_bytes().splitlines(keepends=True)
    log.write_bytes(b"garbage\n" + lines[1])
    with pytest.raises(StorageError, match=r"log.jsonl: line 1 is not a commit record.*re-derived"):
        lake.versions()
    log.unlink()  # as the message says: the log is re-derived from the Delta logs
    assert [(c.lake_version, c.delta_version, c.operation) for c in lake.versions()] == [
        (1, 1, "recovered append"),
        (2, 2, "recovered append"),
    ]
