"""Connections made for one query (``query=``): only the views it names, the same answers as a full connection."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.errors import InvalidArgumentError, QueryRefusedError
from astra_lake.ingest import synthetic as S
from astra_lake.lake.conform import storage_schema
from astra_lake.query import duck

QUERIES = [
    "SELECT count(*) AS n FROM aspcap",
    "SELECT count(*) AS n, sum(teff) AS t FROM aspcap_summary WHERE NOT flag_bad",
    'SELECT spectrum_table, count(*) AS n FROM "spectra" GROUP BY ALL ORDER BY ALL',
    "SELECT name FROM flag_definitions WHERE table_name = 'aspcap' ORDER BY bit, name LIMIT 3",
    "SELECT flag_names('aspcap', 'result_flags', 3) AS names",
    "SELECT count(*) AS n FROM sdss5_targeting",
    "SELECT count(*) AS n FROM astronn",  # a table with no files: an empty, typed view
    "SELECT count(*) AS n FROM query_table('asp' || 'cap')",  # a name no tokenizer sees: run again with every view
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake.init(tmp_path_factory.mktemp("views") / "lake")
    lake.write("source", S.sources(30, seed=1))
    ids = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()[:6]
    for batch in S.spectra("apogee_star", ids, seed=2):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=3))
    return lake


def test_query_words_are_identifiers_and_strings() -> None:
    query = "SELECT \"Ra\", flag_names('aspcap', 'x', 1) FROM aspcap -- spectra\nJOIN source USING (sdss_id)"
    words = duck.query_words(query)
    assert {"source", "ra", "flag_names", "aspcap", "sdss_id"} <= words  # source: a table named like a keyword
    assert "spectra" not in words  # comments name nothing


def test_views_follow_what_the_query_names(lake: Lake) -> None:
    snap = lake.snapshot()
    spectrum_tables = {t.name for t in snap.catalog.schema.of_kind("spectrum")}
    assert duck.view_tables(snap, duck.query_words("SELECT count(*) FROM aspcap")) == ["aspcap"]
    assert duck.view_tables(snap, duck.query_words("SELECT count(*) FROM source")) == ["source"]
    assert set(duck.view_tables(snap, duck.query_words("SELECT * FROM spectra"))) == spectrum_tables
    summary = set(duck.view_tables(snap, duck.query_words("SELECT * FROM aspcap_summary")))
    assert summary == spectrum_tables | {"aspcap", "source"}
    assert duck.view_tables(snap, None) == list(snap.catalog.schema.tables)


@pytest.mark.parametrize("query", QUERIES)
def test_same_answer_as_every_view(lake: Lake, query: str) -> None:
    assert lake.sql(query) == lake.connect().sql(query).to_arrow_table()


def test_counts_are_real(lake: Lake) -> None:
    assert lake.sql(QUERIES[0]).column("n").to_pylist() == [6]
    assert lake.sql(QUERIES[-1]).column("n").to_pylist() == [6]
    assert lake.sql("SELECT count(*) AS n FROM sdss5_targeting").column("n")[0].as_py() > 0


def test_empty_view_has_the_storage_types(lake: Lake) -> None:
    con = lake.connect(query="SELECT * FROM astronn")
    got = con.sql("SELECT * FROM astronn").to_arrow_table()
    want = storage_schema(lake.catalog.schema.table("astronn"))
    assert got.num_rows == 0
    for name in got.column_names:
        if name in want.names:
            expected = want.field(name).type
            actual = got.schema.field(name).type
            if pa.types.is_list(expected):  # DuckDB names list elements its own way
                assert pa.types.is_list(actual) and actual.value_type == expected.value_type, name
            elif pa.types.is_timestamp(expected):  # DuckDB gives UTC its session's name (Etc/UTC)
                assert actual.unit == expected.unit and (actual.tz is None) == (expected.tz is None), name
            else:
                assert actual == expected, name


def test_a_query_connection_reaches_only_its_tables(lake: Lake) -> None:
    other = lake.snapshot().paths("source")[0]
    con = lake.connect(query="SELECT count(*) FROM aspcap")
    assert con.sql("SELECT count(*) FROM aspcap").fetchall() == [(6,)]
    with pytest.raises(QueryRefusedError):
        con.sql(f"SELECT count(*) FROM read_parquet('{other}')").fetchall()
    with pytest.raises(QueryRefusedError):
        con.sql(f"COPY (SELECT 1) TO '{lake.path}/x.csv'")


def test_threads_and_memory_limit(lake: Lake) -> None:
    con = lake.connect(query="SELECT 1", threads=1, memory_limit="512MB")
    assert con.sql("SELECT current_setting('threads')").fetchall() == [(1,)]
    assert con.sql("SELECT current_setting('memory_limit')").fetchall()[0][0].startswith("488")  # 512 MB in MiB
    with pytest.raises(InvalidArgumentError):
        lake.connect(memory_limit="lots")


def test_no_pandas_on_the_query_path(lake: Lake) -> None:
    code = (
        "import sys; from astra_lake import Lake; "
        f"assert Lake({str(lake.path)!r}).sql('SELECT count(*) FROM aspcap').num_rows == 1; "
        "print('pandas' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parent)
    assert out.stdout.strip() == "False"
