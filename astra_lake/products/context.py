"""What every release writer shares: the tag's snapshot, its filtered views, the fixed time and the
output folder."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

from astra_lake.products.filters import ReleaseFilter, create_release_views
from astra_lake.query import duck
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.loader import Schema


@dataclass
class ReleaseContext:
    """A release in the making: one tag's snapshot seen through the filter, written under ``root``."""

    snapshot: Snapshot
    filter: ReleaseFilter
    root: Path
    created: dt.datetime  # the tag's time: every timestamp a release writes
    v_astra: str  # Astra version of the products not tied to one pipeline version
    tables: list[str]  # tables with at least one row in the release
    con: duckdb.DuckDBPyConnection = field(repr=False)

    @property
    def schema(self) -> Schema:
        return self.snapshot.catalog.schema

    @property
    def stamp(self) -> str:
        """ISO time used in CHECKSUM / DATASUM comments and HATS properties."""
        return self.created.strftime("%Y-%m-%dT%H:%M:%S")

    def connection(self) -> duckdb.DuckDBPyConnection:
        """Another connection over the same snapshot and filter (for queries read side by side)."""
        return release_connection(self.snapshot, self.filter)


def release_connection(snapshot: Snapshot, rf: ReleaseFilter) -> duckdb.DuckDBPyConnection:
    con = duck.connect(snapshot)
    schema = snapshot.catalog.schema
    create_release_views(con, schema, list(schema.tables), rf)
    return con
