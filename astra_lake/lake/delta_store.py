"""One lake table = one Delta table whose data files sit in HATS leaves (``Norder=/Dir=/Npix=``).

Parquet files are written by :mod:`astra_lake.lake.files` (exact sort order and row-group size) and
become visible only through one Delta commit that adds them (and removes what they replace), so a
writer killed at any point leaves the previous version complete and readable.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.transaction import AddAction, CommitProperties, RemoveAction

from astra_lake.errors import VersionNotFoundError
from astra_lake.lake.conform import storage_schema
from astra_lake.schema.model import Table

PARTITION_COLUMNS = ["Norder", "Dir", "Npix"]
# In a table's folder: the columns a migration added without rewriting the files (files may lack them).
EVOLVED = "evolved_columns.json"
# Delta writes a checkpoint every CHECKPOINT_EVERY commits (its post-commit hook): opening a table then
# reads one Parquet checkpoint plus a few JSON commits instead of every commit since the start (at 44
# versions: 80-100 ms -> 19 ms).
CHECKPOINT_EVERY = 10
TABLE_CONFIG = {
    # Time travel to tagged versions must survive log clean-up; vacuum is told which versions to keep.
    "delta.enableExpiredLogCleanup": "false",
    "delta.logRetentionDuration": "interval 36500 days",
    "delta.checkpointInterval": str(CHECKPOINT_EVERY),
}


@dataclass(frozen=True)
class DataFile:
    """A Parquet file of a table snapshot, with what pruning needs (leaf pixel, _healpix_29 range)."""

    path: str
    size: int
    num_rows: int
    norder: int
    npix: int
    hmin: int | None = None
    hmax: int | None = None

    @property
    def partition_values(self) -> dict[str, str | None]:
        return {"Norder": str(self.norder), "Dir": str((self.npix // 10_000) * 10_000), "Npix": str(self.npix)}


def delta_schema(table: Table) -> pa.Schema:
    base = storage_schema(table)
    fields = [pa.field(f.name, f.type, nullable=True) for f in base]
    return pa.schema(fields + [pa.field(c, pa.int32()) for c in PARTITION_COLUMNS])


class DeltaStore:
    """Storage of one table: create, list a snapshot's files, commit adds/removes, history."""

    def __init__(self, root: Path, table: Table) -> None:
        self.root = root
        self.table = table
        self.dataset = root / "dataset"
        self._latest: DeltaTable | None = None  # brought up to date incrementally (~3 ms, not a reopen)

    @property
    def read_schema(self) -> pa.Schema | None:
        """The declared storage schema when some file of the table may lack a declared column (a column
        added by ``astra-lake migrate`` without rewriting the files: :data:`EVOLVED` marks the table);
        None when every file carries it. Readers pass it to the scans of
        :mod:`astra_lake.lake.conform` (``parquet_scan``, ``read_file``, ``on_read``)."""
        return storage_schema(self.table) if (self.root / EVOLVED).exists() else None

    def exists(self) -> bool:
        return (self.dataset / "_delta_log").is_dir()

    def create(self) -> None:
        self.dataset.mkdir(parents=True, exist_ok=True)
        DeltaTable.create(
            str(self.dataset),
            delta_schema(self.table),
            mode="ignore",
            partition_by=PARTITION_COLUMNS,
            name=self.table.name,
            description=self.table.description[:200],
            configuration=TABLE_CONFIG,
        )

    def delta(self, version: int | None = None) -> DeltaTable:
        """The table at a version; the latest (as committed by any process) when None."""
        try:
            if version is not None:
                return DeltaTable(str(self.dataset), version=version)
            if self._latest is None:
                self._latest = DeltaTable(str(self.dataset))
            else:
                self._latest.update_incremental()
            return self._latest
        except Exception as exc:  # deltalake raises several internal types for a missing version
            raise VersionNotFoundError(f"{self.table.name}: version {version} is not readable ({exc})") from None

    def latest_version(self) -> int:
        """The newest committed version. Before this store has opened its table: the highest
        ``<version>.json`` of the Delta log (a commit is that file's atomic creation), so pinning a
        snapshot of many tables loads none of them."""
        if self._latest is None:
            try:
                names = os.listdir(self.dataset / "_delta_log")
            except OSError:
                names = []
            versions = [int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()]
            if versions:
                return max(versions)
        return int(self.delta().version())

    def files(self, version: int | None = None) -> list[DataFile]:
        """The data files of a version (the latest when None); none before the first commit."""
        if version is None and not self.exists():
            return []
        add = self.delta(version).get_add_actions(flatten=True)
        actions = pa.RecordBatchReader.from_stream(add).read_all()  # not pa.table(): it imports pandas
        cols = actions.column_names
        out = []
        for row in actions.to_pylist():
            out.append(
                DataFile(
                    path=row["path"],
                    size=int(row["size_bytes"]),
                    num_rows=int(row.get("num_records") or 0),
                    norder=int(row["partition.Norder"]),
                    npix=int(row["partition.Npix"]),
                    hmin=row.get("min._healpix_29") if "min._healpix_29" in cols else None,
                    hmax=row.get("max._healpix_29") if "max._healpix_29" in cols else None,
                )
            )
        return sorted(out, key=lambda f: (f.npix, f.hmin or 0, f.path))

    def abspath(self, f: DataFile) -> str:
        return str(self.dataset / f.path)

    def missing(self, files: list[DataFile]) -> list[DataFile]:
        """The files no longer on disk (vacuum deleted them)."""
        return [f for f in files if not os.path.exists(self.abspath(f))]

    def paths(self, files: list[DataFile] | None = None) -> list[str]:
        """Absolute paths of ``files`` (default: the latest version's files)."""
        return [self.abspath(f) for f in (self.files() if files is None else files)]

    def commit(self, adds: list[DataFile], removes: list[DataFile], operation: str, metadata: dict[str, Any]) -> int:
        """Add and remove files in one atomic Delta commit; returns the new version."""
        now = int(time.time() * 1000)
        actions: list[AddAction | RemoveAction] = [
            RemoveAction(
                path=f.path,
                deletion_timestamp=now,
                data_change=operation != "compact",
                partition_values=f.partition_values,
                size=f.size,
            )
            for f in removes
        ]
        for f in adds:
            stats: dict[str, Any] = {"numRecords": f.num_rows}
            if f.hmin is not None:
                stats |= {
                    "minValues": {"_healpix_29": f.hmin},
                    "maxValues": {"_healpix_29": f.hmax},
                    "nullCount": {"_healpix_29": 0},
                }
            actions.append(AddAction(f.path, f.size, f.partition_values, now, operation != "compact", json.dumps(stats)))
        props = CommitProperties(custom_metadata={"astra_lake.operation": operation, **{k: str(v) for k, v in metadata.items()}})
        self.delta().create_write_transaction(
            actions, mode="append", schema=delta_schema(self.table), partition_by=PARTITION_COLUMNS, commit_properties=props
        )
        return self.latest_version()

    def landed_after(self, before: int) -> int | None:
        """After a failed :meth:`commit`: the version it made if it landed anyway (a step after the commit
        failed, e.g. its checkpoint), else None. Only the holder of the writer lock commits, so a version
        after ``before`` is the failed commit's."""
        self._latest = None  # reopen: the cached handle may be what failed
        latest = self.latest_version()
        return latest if latest > before else None

    def history(self) -> list[dict[str, Any]]:
        return list(self.delta().history())
