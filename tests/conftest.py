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
def official_datamodel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The official SDSS datamodel YAMLs the extracts in data_schema/ come from: bundled (gzipped) in
    tests/data/sdss_datamodel, unpacked for the test session."""
    import gzip

    out = tmp_path_factory.mktemp("sdss_datamodel")
    for packed in sorted((DATA / "sdss_datamodel").glob("*.yaml.gz")):
        (out / packed.name.removesuffix(".gz")).write_bytes(gzip.decompress(packed.read_bytes()))
    return out


@pytest.fixture(scope="session")
def sql_con() -> duckdb.DuckDBPyConnection:
    from astra_lake.schema.generate import sql_library_path

    con = duckdb.connect()
    con.execute(sql_library_path().read_text())
    return con


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo lake (`astra-lake demo`) at a small size: real fixtures, 60 synthetic sources, a kernel run,
    a tag and a release. Tests that change it work on a copy."""
    from astra_lake.cli.demo_cmd import demo

    path = tmp_path_factory.mktemp("demo") / "demo-lake"
    demo(path=path, sources=60)
    return path
