"""DuckDB macros == Polars expressions == Python helpers, for every flagged table, on random 64-bit values."""

from __future__ import annotations

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra_lake.schema import flags as F
from astra_lake.schema import polars_flags as PF
from astra_lake.schema.loader import load_schema

SUMMARY = [(t.name, w) for t in load_schema().flagged_tables for w in F.defines(t)]
FLAG_COLUMNS = [(t.name, fc.name) for t in load_schema().flagged_tables for fc in t.flag_columns]
EDGES = [0, 1, -1, 2**63 - 1, -(2**63), 2**62, 1 << 26 | 1 << 5, -(2**31), 2**31]
int64s = st.integers(min_value=-(2**63), max_value=2**63 - 1)
versions = st.sampled_from([None, 6000, 6999, 7000, 8000, 8001])


def _frame(values: list[int | None], v_astra: list[int | None]) -> pa.Table:
    return pa.table(
        {
            "result_flags": pa.array(values, pa.int64()),
            "v_astra": pa.array(v_astra, pa.int32()),
            "i": pa.array(range(len(values)), pa.int32()),
        }
    )


def _check_summary(
    con: duckdb.DuckDBPyConnection, table: str, which: str, values: list[int | None], vs: list[int | None]
) -> None:
    frame = _frame(values, vs)
    col = load_schema().table(table).summary_column.name  # type: ignore[union-attr]
    frame = frame.rename_columns([col, "v_astra", "i"])
    duck = con.execute(f"SELECT {table}_{which}({col}, v_astra) FROM frame ORDER BY i").fetchall()
    duck_latest = con.execute(f"SELECT {table}_{which}({col}) FROM frame ORDER BY i").fetchall()
    pol = pl.from_arrow(frame).select(PF.summary_expr(table, which, column=col)).to_series().to_list()
    py = [F.evaluate(table, which, v, a) for v, a in zip(values, vs, strict=True)]  # type: ignore[arg-type]
    py_latest = [F.evaluate(table, which, v, None) for v in values]  # type: ignore[arg-type]
    assert [r[0] for r in duck] == pol == py
    assert [r[0] for r in duck_latest] == py_latest
    known = [(v, a) for v, a in zip(values, vs, strict=True) if v is not None]
    if known:
        arr = F.evaluate_array(table, which, np.array([v for v, _ in known]), np.array([a or 10**8 for _, a in known]))
        assert arr.tolist() == [F.evaluate(table, which, v, a or 10**8) for v, a in known]  # type: ignore[arg-type]


@pytest.mark.parametrize(("table", "which"), SUMMARY)
def test_summary_edges(sql_con: duckdb.DuckDBPyConnection, table: str, which: str) -> None:
    values: list[int | None] = [*EDGES, None]
    for v in (None, 6000, 8000):
        _check_summary(sql_con, table, which, values, [v] * len(values))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_summary_random(sql_con: duckdb.DuckDBPyConnection, data: st.DataObject) -> None:
    table, which = data.draw(st.sampled_from(SUMMARY))
    values = data.draw(st.lists(st.one_of(int64s, st.none()), min_size=1, max_size=40))
    vs = data.draw(st.lists(versions, min_size=len(values), max_size=len(values)))
    _check_summary(sql_con, table, which, values, vs)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_decode_random(sql_con: duckdb.DuckDBPyConnection, data: st.DataObject) -> None:
    table, column = data.draw(st.sampled_from(FLAG_COLUMNS))
    values = data.draw(st.lists(int64s, min_size=1, max_size=20))
    rows = sql_con.execute(
        "SELECT flag_names($1, $2, v) FROM "
        "(SELECT unnest($3::BIGINT[]) AS v, generate_subscripts($3::BIGINT[], 1) AS i) ORDER BY i",
        [table, column, values],
    ).fetchall()
    assert [r[0] for r in rows] == [F.decode(table, v, column) for v in values] == F.decode_array(table, values, column)
    for v in values:
        names = F.decode(table, v, column)
        enc = sql_con.execute("SELECT flag_value(?, ?, ?::VARCHAR[])", [table, column, names]).fetchone()
        assert enc is not None and enc[0] == F.encode(table, names, column)


def test_has_flag_macro_bit_63_and_range(sql_con: duckdb.DuckDBPyConnection) -> None:
    got = sql_con.execute("SELECT has_flag(CAST(-9223372036854775808 AS BIGINT), 63), has_flag(CAST(-1 AS BIGINT), 0)").fetchone()
    assert got == (True, True)
    with pytest.raises(duckdb.Error, match="between 0 and 63"):
        sql_con.execute("SELECT has_flag(1, 64)").fetchall()


def test_uint64_arrays_are_bit_patterns() -> None:
    vals = np.array([2**63, 2**64 - 1], dtype=np.uint64)
    assert F.evaluate_array("aspcap", "flag_warn", vals).tolist() == [True, True]
    assert F.evaluate_array("aspcap", "flag_bad", vals).tolist() == [False, True]


def test_polars_has_flag_and_named_columns() -> None:
    df = pl.DataFrame({"result_flags": [67108896, 0, None]})
    out = df.select(PF.named_flag_exprs("aspcap"))
    assert out["flag_low_snr"].to_list() == [True, False, None]
    assert out["flag_teff_grid_edge_warn"].to_list() == [True, False, None]
    assert out.width == 28


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=st.binary(min_size=0, max_size=80))
def test_sdss5_target_flags_python_equals_sql(sql_con: duckdb.DuckDBPyConnection, raw: bytes) -> None:
    got = sql_con.execute("SELECT sdss5_cartons(?::BLOB)", [raw]).fetchone()
    assert got is not None and got[0] == F.sdss5_cartons(raw)
    bits = F.sdss5_target_bits(raw) or []
    for b in bits[:5]:
        assert sql_con.execute("SELECT sdss5_target_bit(?::BLOB, ?)", [raw, b]).fetchone() == (True,)
