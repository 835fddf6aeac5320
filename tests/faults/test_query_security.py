"""Query connections cannot change a byte of the lake, and by default reach only the snapshot's files."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import duckdb
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

import astra_lake
from astra_lake import Lake
from astra_lake.errors import QueryRefusedError
from astra_lake.ingest import synthetic as S


def digest(root: Path) -> dict[str, str]:
    """Every file and directory under ``root`` with the hash of its bytes."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake.init(tmp_path_factory.mktemp("security") / "lake")
    lake.write("source", S.sources(40, seed=1))
    ids = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()[:8]
    for batch in S.spectra("apogee_star", ids, seed=2):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=3))
    lake.tag("before")
    return lake


@pytest.fixture(scope="module")
def connections(lake: Lake) -> dict[bool, duckdb.DuckDBPyConnection]:
    """A default and an external-access connection (refused statements leave a connection as it was)."""
    return {external: lake.connect(external_access=external) for external in (False, True)}


@pytest.fixture()
def unchanged(lake: Lake, connections: dict[bool, duckdb.DuckDBPyConnection]):  # type: ignore[no-untyped-def]
    """Asserts, after the test, that no file of the lake was added, removed or changed."""
    before = digest(lake.path)
    yield
    assert digest(lake.path) == before
    assert connections[False].sql("SELECT count(*) FROM aspcap").fetchall() == [(8,)]  # and it still reads


def _statements(lake: Lake) -> list[tuple[str, type[Exception]]]:
    leaf = lake.snapshot().paths("aspcap")[0]
    new_leaf = str(Path(leaf).with_name("part-new.parquet"))
    root = lake.path
    return [
        (f"COPY (SELECT * FROM aspcap) TO '{leaf}'", QueryRefusedError),
        (f"COPY (SELECT * FROM aspcap) TO '{leaf}' (USE_TMP_FILE false)", QueryRefusedError),
        (f"COPY (SELECT * FROM aspcap LIMIT 1) TO '{new_leaf}'", QueryRefusedError),
        (f"COPY (SELECT 1 AS broken) TO '{root}/lake.json' (FORMAT csv)", QueryRefusedError),
        (f"SELECT 1; COPY (SELECT 1) TO '{root}/_meta/log.jsonl' (FORMAT csv)", QueryRefusedError),
        (f"EXPLAIN ANALYZE COPY (SELECT 1) TO '{root}/lake.json' (FORMAT csv)", QueryRefusedError),
        (f"PREPARE p AS COPY (SELECT 1) TO '{root}/lake.json' (FORMAT csv)", QueryRefusedError),
        (f"EXPORT DATABASE '{root}/export'", QueryRefusedError),
        (f"ATTACH '{root}/x.duckdb' AS x", QueryRefusedError),
        (f"ATTACH '{leaf}' AS y", QueryRefusedError),
        (f"PRAGMA import_database('{root}')", QueryRefusedError),
        ("INSTALL httpfs", QueryRefusedError),
        ("LOAD parquet", QueryRefusedError),
        ("SET lock_configuration = false", duckdb.InvalidInputException),
        ("SET enable_external_access = true", duckdb.InvalidInputException),
        ("RESET enable_external_access", duckdb.InvalidInputException),
        ("SET allowed_directories = ['/']", duckdb.InvalidInputException),
        (f"SET temp_directory = '{root}'", duckdb.InvalidInputException),
        (f"SET profiling_output = '{root}/lake.json'", duckdb.InvalidInputException),
        (f"SET log_query_path = '{root}/lake.json'", duckdb.InvalidInputException),
        ("PRAGMA enable_profiling", duckdb.InvalidInputException),
    ]


@pytest.mark.parametrize("external_access", [False, True], ids=["default", "external"])
def test_no_statement_writes_into_the_lake(
    lake: Lake, connections: dict[bool, duckdb.DuckDBPyConnection], unchanged: None, external_access: bool
) -> None:
    con = connections[external_access]
    for sql, error in _statements(lake):
        with pytest.raises(error):
            con.sql(sql)
        with pytest.raises(error):
            con.execute(sql)
        with pytest.raises(error):
            con.cursor().sql(sql)
        with pytest.raises(error):
            con.sql("SELECT 1").query("t", sql)
    with pytest.raises(QueryRefusedError):
        con.install_extension("httpfs")
    with pytest.raises(QueryRefusedError):
        con.load_extension("parquet")
    with pytest.raises(QueryRefusedError):
        astra_lake.connect(lake.path, external_access=external_access).sql(f"COPY (SELECT 1) TO '{lake.path}/lake.json'")
    assert con.sql("SELECT count(*) FROM source").fetchall() == [(40,)]  # still usable after every refusal


@pytest.mark.parametrize("external_access", [False, True], ids=["default", "external"])
def test_relations_write_results_outside_the_lake_only(
    lake: Lake, connections: dict[bool, duckdb.DuckDBPyConnection], unchanged: None, external_access: bool, tmp_path: Path
) -> None:
    con = connections[external_access]
    rel = con.sql("SELECT sdss_id, teff FROM aspcap_summary ORDER BY sdss_id")
    for target in (lake.snapshot().paths("aspcap")[0], str(lake.path / "lake.json"), str(lake.path / "new.parquet")):
        with pytest.raises(QueryRefusedError, match="inside the lake"):
            rel.write_parquet(target)
        with pytest.raises(QueryRefusedError, match="inside the lake"):
            rel.write_csv(target)
    (tmp_path / "link").symlink_to(lake.path)  # a way into the lake from outside it
    with pytest.raises(QueryRefusedError, match="inside the lake"):
        rel.to_parquet(str(tmp_path / "link" / "lake.json"))
    rel.write_parquet(str(tmp_path / "out.parquet"))
    assert pq.read_table(tmp_path / "out.parquet").to_pydict() == rel.to_arrow_table().to_pydict()
    rel.write_csv(str(tmp_path / "out.csv"))
    expected = rel.to_arrow_table()
    types = pacsv.ConvertOptions(column_types=dict(zip(expected.column_names, expected.schema.types, strict=True)))
    assert pacsv.read_csv(tmp_path / "out.csv", convert_options=types).to_pydict() == expected.to_pydict()


def test_default_connections_reach_only_the_snapshot_files(
    lake: Lake, connections: dict[bool, duckdb.DuckDBPyConnection], unchanged: None, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.csv"
    mine.write_text("sdss_id,note\n1,x\n")
    con = connections[False]
    root = lake.path
    for sql in (
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM sniff_csv('/etc/passwd')",
        "SELECT * FROM read_text('/etc/hostname')",
        "SELECT * FROM read_blob('/etc/hostname')",
        "SELECT * FROM glob('/etc/*')",
        f"SELECT * FROM glob('{root}/*')",
        f"SELECT * FROM read_text('{root}/lake.json')",
        f"SELECT count(*) FROM read_parquet('{root}/aspcap/dataset/**/*.parquet')",
        f"SELECT * FROM read_csv('{mine}')",
    ):
        with pytest.raises(QueryRefusedError, match="reads only its snapshot's files"):
            con.sql(sql).fetchall()
    # what the snapshot is made of stays readable, through the views and by its exact files
    leaf = lake.snapshot().paths("aspcap")[0]
    assert con.sql(f"SELECT count(*) FROM read_parquet('{leaf}')").fetchall()[0][0] > 0
    # a pinned connection reaches its own version's files
    assert lake.connect("before").sql("SELECT count(*) FROM aspcap").fetchall() == [(8,)]


def test_external_access_reads_the_users_files(
    lake: Lake, connections: dict[bool, duckdb.DuckDBPyConnection], unchanged: None, tmp_path: Path
) -> None:
    mine = tmp_path / "mine.csv"
    ids = connections[False].sql("SELECT sdss_id FROM aspcap_summary ORDER BY sdss_id LIMIT 2").fetchall()
    mine.write_text("sdss_id,note\n" + "".join(f"{i},star {k}\n" for k, (i,) in enumerate(ids)))
    q = f"SELECT a.sdss_id, m.note FROM aspcap_summary a JOIN read_csv('{mine}') m USING (sdss_id) ORDER BY 1"
    assert connections[True].sql(q).fetchall() == [(i, f"star {k}") for k, (i,) in enumerate(ids)]
    with pytest.raises(QueryRefusedError):
        connections[False].sql(q)


@pytest.mark.parametrize(
    "attack",
    [
        lambda con, root: con.sql("SELECT 1").write_csv(str(root / "lake.json"), use_tmp_file=False),
        lambda con, root: con.sql("SELECT 1").write_parquet(str(root / "lake.json"), overwrite=True),
        lambda con, root: con.register_filesystem(object()),
        lambda con, root: con.executemany(f"COPY (SELECT 1) TO '{root}/lake.json'"),
        lambda con, root: con.from_query(f"ATTACH '{root}/z.db'"),
    ],
)
def test_python_methods_cannot_write_into_the_lake_either(
    lake: Lake,
    connections: dict[bool, duckdb.DuckDBPyConnection],
    unchanged: None,
    attack: Callable[[duckdb.DuckDBPyConnection, Path], object],
) -> None:
    for con in connections.values():
        with pytest.raises(QueryRefusedError):
            attack(con, lake.path)
