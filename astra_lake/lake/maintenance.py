"""Compaction (merge a leaf's small files into sorted files of bounded size) and vacuum (delete
unreferenced files, never those of a tagged version)."""

from __future__ import annotations

import contextlib
import math
import os
from collections import defaultdict

import pyarrow as pa
from deltalake import DeltaTable

from astra_lake.errors import InvalidArgumentError
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.conform import read_file, storage_schema
from astra_lake.lake.delta_store import DataFile, DeltaStore
from astra_lake.lake.files import discard, write_leaf_files

COMPACT_TARGET_BYTES = 512 * 2**20  # a merged file grows to about this size; larger files stay as they are


def compact(catalog: Catalog, table: str, *, min_files: int = 2, tiered: bool = False) -> dict[str, int]:
    """Merge the small files of every leaf that has at least ``min_files`` of them; one commit per table.

    Files are merged in groups of up to COMPACT_TARGET_BYTES (in ``_healpix_29`` order), so memory stays
    bounded however large a leaf grows; readers pinned to older versions keep working (old files stay
    until vacuum). ``tiered`` (the automatic policy after writes) merges only a leaf's smallest files
    (see :func:`tier`), so repeated appends rewrite each row a logarithmic, not linear, number of times.
    """
    store = catalog.store(table)
    if not store.exists():
        return {"leaves": 0, "files_removed": 0, "files_added": 0}
    by_leaf: dict[int, list[DataFile]] = defaultdict(list)
    for f in store.files():
        if f.size < COMPACT_TARGET_BYTES // 2:
            by_leaf[f.npix].append(f)
    schema = storage_schema(store.table)
    removed: list[DataFile] = []
    added: list[DataFile] = []
    try:
        for files in by_leaf.values():
            if len(files) < min_files:
                continue
            for group in _groups(tier(files) if tiered else files):
                parts = [read_file(store.abspath(f), schema) for f in group]
                added += write_leaf_files(store, pa.concat_tables(parts))
                removed += group
    except BaseException:
        discard(store, added)
        raise
    if removed:
        rows = sum(f.num_rows for f in added)
        catalog.commit(table, added, removed, "compact", rows, {"files_removed": len(removed)})
    return {"leaves": len({f.npix for f in removed}), "files_removed": len(removed), "files_added": len(added)}


def tier(files: list[DataFile]) -> list[DataFile]:
    """The smallest files of a leaf, taken in size order while each is at most twice the sum of those
    before it: a large file is rewritten only once the small ones add up to half its size, so every
    rewrite of a row makes its file at least 1.5x larger."""
    chosen: list[DataFile] = []
    total = 0
    for f in sorted(files, key=lambda f: f.size):
        if chosen and f.size > 2 * total:
            break
        chosen.append(f)
        total += f.size
    return chosen


def _groups(files: list[DataFile]) -> list[list[DataFile]]:
    """Consecutive runs (by ``_healpix_29``) of at least two files and at most COMPACT_TARGET_BYTES."""
    out: list[list[DataFile]] = [[]]
    size = 0
    for f in sorted(files, key=lambda f: (f.hmin if f.hmin is not None else -1, f.path)):
        if out[-1] and size + f.size > COMPACT_TARGET_BYTES:
            out.append([])
            size = 0
        out[-1].append(f)
        size += f.size
    return [g for g in out if len(g) > 1]


def vacuum(catalog: Catalog, table: str, *, retention_hours: float = 168, dry_run: bool = True) -> list[str]:
    """Delete files no version within ``retention_hours`` (nor any tagged version) references, and files
    no version ever referenced (left by killed or failed writers), whatever their age.

    ``dry_run`` (the default) only lists them. Call with the writer lock held (no writer is staging
    files then); Delta's own vacuum commits are logged as ``vacuum``.
    """
    check_retention(retention_hours)
    store = catalog.store(table)
    if not store.exists():
        return []
    dt = store.delta()
    keep = sorted({int(t["tables"][table]) for t in catalog.tags().values() if table in t["tables"]})
    hours = math.ceil(retention_hours)  # Delta takes whole hours: never keep less than asked
    old = _absolute(store, _delta_vacuum(dt, hours, keep, dry_run=True))
    every = list(range(dt.version() + 1))  # with every version kept, what is left is what none referenced
    orphans = [p for p in _absolute(store, _delta_vacuum(dt, 0, every, dry_run=True)) if p not in set(old)]
    if not dry_run:
        if old:
            _delta_vacuum(dt, hours, keep, dry_run=False)
            catalog.repair_log()  # logs vacuum's own Delta commits
        for path in orphans:
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
    return sorted([*old, *orphans])


def check_retention(hours: object) -> None:
    """Refuse a retention that is not a number of hours >= 0."""
    if isinstance(hours, bool) or not isinstance(hours, int | float) or not hours >= 0:
        raise InvalidArgumentError(f"vacuum: retention_hours must be a number of hours >= 0, not {hours!r}")


def _delta_vacuum(dt: DeltaTable, hours: int, keep: list[int], *, dry_run: bool) -> list[str]:
    """Delta's vacuum of every file (``full``) not referenced by versions within ``hours`` nor by ``keep``."""
    return list(
        dt.vacuum(retention_hours=hours, dry_run=dry_run, enforce_retention_duration=False, full=True, keep_versions=keep or None)
    )


def _absolute(store: DeltaStore, paths: list[str]) -> list[str]:
    return [p if os.path.isabs(p) else str(store.dataset / p) for p in paths]
