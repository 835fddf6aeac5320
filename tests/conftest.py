"""Shared fixtures: paths to the bundled real fixtures and a DuckDB connection with the SQL library loaded."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

DATA = Path(__file__).parent / "data"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def sql_con() -> duckdb.DuckDBPyConnection:
    from astra_lake.schema.generate import sql_library_path

    con = duckdb.connect()
    con.execute(sql_library_path().read_text())
    return con
