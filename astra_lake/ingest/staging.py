"""A writer whose commits wait, so that a file's rows for every table either all commit or none do.

An ingest batch writes several tables (sources, then spectra that need their ``source_pk``, then
results that need their ``spectrum_pk``), each table a Delta commit of its own. The staging writer
writes each table's files but holds its commit back; lookups made while staging (positions, keys,
links) see the held files as if committed. If any table fails, :meth:`discard` deletes every held file
and nothing of the batch is visible; otherwise :meth:`commit` commits the tables in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from astra_lake.lake.catalog import Catalog
from astra_lake.lake.delta_store import DataFile, DeltaStore
from astra_lake.lake.files import discard
from astra_lake.lake.writer import Writer


@dataclass(frozen=True)
class Held:
    """One table's commit, held back."""

    store: DeltaStore
    adds: list[DataFile]
    removes: list[DataFile]
    operation: str
    rows: int


class StagingWriter(Writer):
    """:class:`Writer` whose ``upsert``/``append`` calls stage their commit until :meth:`commit`."""

    def __init__(self, catalog: Catalog) -> None:
        super().__init__(catalog)
        self.held: list[Held] = []

    def _commit(self, store: DeltaStore, adds: list[DataFile], removes: list[DataFile], operation: str, rows: int) -> int:
        if any(h.store.table.name == store.table.name for h in self.held):
            discard(store, adds)
            raise RuntimeError(f"{store.table.name} is written twice in one staged batch")  # a bug of the caller
        self.held.append(Held(store, adds, removes, operation, rows))
        return -1

    def _paths(self, table: str) -> list[str]:
        store = self.catalog.store(table)
        files = {f.path: f for f in store.files()}
        for h in self.held:
            if h.store.table.name == table:
                for f in h.removes:
                    files.pop(f.path, None)
                files |= {f.path: f for f in h.adds}
        return store.paths(list(files.values()))

    def commit(self) -> list[str]:
        """Commit every held table, in the order they were written; returns their names."""
        held, self.held = self.held, []
        for h in held:
            Writer._commit(self, h.store, h.adds, h.removes, h.operation, h.rows)
        return [h.store.table.name for h in held]

    def discard(self) -> None:
        """Delete every held file; nothing of them was ever visible."""
        held, self.held = self.held, []
        for h in held:
            discard(h.store, h.adds)
