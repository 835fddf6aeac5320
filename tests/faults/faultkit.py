"""Helpers of the fault suite: child processes, mounts (a full disk, a read-only file system) and the
lake's invariants, checked from the snapshot's files (no DuckDB connection needed)."""

from __future__ import annotations

import contextlib
import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astra_lake import Lake


def run_child(ctx: Any, target: Callable[..., None], *args: Any, timeout: float = 120) -> int | None:
    """Run ``target(*args)`` in a child process; its exit code (-9 when it was killed)."""
    proc = ctx.Process(target=target, args=args)
    proc.start()
    proc.join(timeout)
    if proc.is_alive():
        proc.kill()
        proc.join()
        pytest.fail(f"{target.__name__}{args} did not finish in {timeout} s")
    return proc.exitcode


# -- mounts ---------------------------------------------------------------------------------------------
def mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    """A small file system at ``path`` (a full disk on demand)."""
    path.mkdir(parents=True, exist_ok=True)
    mount("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path))
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def resize(path: Path, size: str) -> None:
    mount("-o", f"remount,size={size}", str(path))


@contextlib.contextmanager
def read_only(path: Path) -> Iterator[Path]:
    """``path`` (file or directory) read-only for everyone, root included (a read-only bind mount)."""
    mount("--bind", str(path), str(path))
    try:
        mount("-o", "remount,ro,bind", str(path))
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


# -- the lake's invariants --------------------------------------------------------------------------------
def rows(lake: Lake, table: str, columns: list[str], version: int | str | None = None) -> pa.Table:
    """Columns of a table at a version, read from the snapshot's files (no DuckDB connection needed)."""
    snap = lake.snapshot(version)
    paths = snap.paths(table)
    if not paths:
        return pa.table({c: pa.array([], pa.int64()) for c in columns})
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths])


def on_disk(lake: Lake, table: str) -> set[str]:
    return {str(p) for p in (lake.path / table / "dataset").rglob("*.parquet")}


def assert_consistent(lake: Lake) -> None:
    """The log is whole and complete, and keys and identities are unique in every table."""
    commits = lake.versions()  # repairs the log first
    raw = (lake.path / "_meta" / "log.jsonl").read_bytes()
    assert raw == b"" or raw.endswith(b"\n")
    assert [json.loads(line)["lake_version"] for line in raw.splitlines()] == list(range(1, len(commits) + 1))
    for table in lake.catalog.existing_tables():
        logged = [c.delta_version for c in commits if c.table == table]
        assert logged == list(range(1, lake.catalog.store(table).latest_version() + 1)), table
        tbl = lake.catalog.schema.table(table)
        ident = {"source": "source_pk", "spectrum": "spectrum_pk", "pipeline": "task_pk", "pixel": "task_pk"}.get(tbl.kind)
        keys = rows(lake, table, [*tbl.upsert_key, *([ident] if ident else [])])
        n = keys.num_rows
        assert keys.select(list(tbl.upsert_key)).group_by(list(tbl.upsert_key)).aggregate([]).num_rows == n, table
        if ident:
            assert len(set(keys.column(ident).to_pylist())) == n, table


def assert_no_orphans_after_vacuum(lake: Lake) -> None:
    """Vacuum (default retention, dry run) lists every file no version references, and deleting them
    leaves exactly the files the versions reference."""
    referenced = {
        t: {p for v in range(lake.version + 1) for p in lake.snapshot(v).paths(t)} for t in lake.catalog.existing_tables()
    }
    listed = lake.vacuum(dry_run=True)
    for table, paths in listed.items():
        assert set(paths) == on_disk(lake, table) - referenced[table], table
    lake.vacuum(dry_run=False)
    for table in listed:
        assert on_disk(lake, table) == referenced[table], table
