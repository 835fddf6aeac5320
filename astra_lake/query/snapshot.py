"""A read snapshot: for each table, exactly the data files of one version (never a directory glob)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from astra_lake.errors import InvalidArgumentError, VersionNotFoundError
from astra_lake.lake.catalog import Catalog
from astra_lake.lake.delta_store import DataFile


@dataclass
class Snapshot:
    """The files of every table at a lake version or tag (the latest when ``version`` is None)."""

    catalog: Catalog
    version: int | str | None = None
    _files: dict[str, list[DataFile]] = field(default_factory=dict, repr=False)
    _ranges: dict[str, npt.NDArray[np.int64]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.table_versions = self.catalog.resolve(self.version)
        if self.table_versions is None:  # latest: pin what is there now
            self.table_versions = {t: self.catalog.store(t).latest_version() for t in self.catalog.existing_tables()}

    def files(self, table: str) -> list[DataFile]:
        if table not in self._files:
            v = self.table_versions.get(table) if self.table_versions is not None else None
            store = self.catalog.store(table)
            self._files[table] = store.files(v) if v is not None and store.exists() else []
            if self.version is not None:  # an old version: vacuum may have deleted its files
                self._check_readable(table, v)
        return self._files[table]

    def _check_readable(self, table: str, delta_version: int | None) -> None:
        gone = self.catalog.store(table).missing(self._files[table])
        if gone:
            raise VersionNotFoundError(
                f"lake version {self.version} is no longer readable: vacuum deleted {len(gone)} of the "
                f"{len(self._files[table])} files of {table} (Delta version {delta_version}), e.g. {gone[0].path}; "
                "tag a version to keep it"
            )

    def paths(self, table: str) -> list[str]:
        return self.catalog.store(table).paths(self.files(table))

    def healpix_ranges(self, table: str) -> npt.NDArray[np.int64]:
        """(n_files, 2) closed ``_healpix_29`` interval of each file (its leaf, narrowed by its min/max)."""
        if table not in self._ranges:
            shift = 2 * (29 - self.catalog.schema.table(table).healpix_order)
            out = np.empty((len(self.files(table)), 2), dtype=np.int64)
            for i, f in enumerate(self.files(table)):
                out[i] = (f.npix << shift, ((f.npix + 1) << shift) - 1)
                if f.hmin is not None and f.hmax is not None:
                    out[i] = (max(out[i, 0], f.hmin), min(out[i, 1], f.hmax))
            self._ranges[table] = out
        return self._ranges[table]


def check_columns(table: str, asked: Iterable[str] | None, have: Sequence[str]) -> None:
    """Raise :class:`InvalidArgumentError` naming the ``asked`` columns that ``table`` does not have, and
    the ones it has (``asked`` None: every column, nothing to check)."""
    known = set(have)
    if asked is not None and (unknown := [c for c in asked if c not in known]):
        raise InvalidArgumentError(f"{table} has no column(s) {', '.join(unknown)}; its columns are {', '.join(have)}")
