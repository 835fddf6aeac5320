"""A read snapshot: for each table, exactly the data files of one version (never a directory glob)."""

from __future__ import annotations

from dataclasses import dataclass, field

from astra_lake.lake.catalog import Catalog
from astra_lake.lake.delta_store import DataFile


@dataclass
class Snapshot:
    """The files of every table at a lake version or tag (the latest when ``version`` is None)."""

    catalog: Catalog
    version: int | str | None = None
    _files: dict[str, list[DataFile]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.table_versions = self.catalog.resolve(self.version)
        if self.table_versions is None:  # latest: pin what is there now
            self.table_versions = {t: self.catalog.store(t).latest_version() for t in self.catalog.existing_tables()}

    def files(self, table: str) -> list[DataFile]:
        if table not in self._files:
            v = self.table_versions.get(table) if self.table_versions is not None else None
            store = self.catalog.store(table)
            self._files[table] = store.files(v) if v is not None and store.exists() else []
        return self._files[table]

    def paths(self, table: str) -> list[str]:
        store = self.catalog.store(table)
        return [store.abspath(f) for f in self.files(table)]
