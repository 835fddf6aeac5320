"""Read, change, write back: rows read through any read path (DuckDB, Arrow, Polars, pandas; table or
summary view) can be upserted as they are; what reads add is dropped, anything else unknown is refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.errors import ValidationError
from astra_lake.ingest import synthetic as S
from astra_lake.lake.conform import conform, storage_schema
from astra_lake.schema.loader import load_schema
from astra_lake.schema.views import derived_columns


@pytest.fixture(scope="module")
def lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """40 sources, 24 APOGEE coadds, one ASPCAP result each; ``continuum_order`` null for every third."""
    lk = Lake.init(tmp_path_factory.mktemp("write-back") / "lake")
    src = S.sources(40, seed=3)
    lk.write("source", src)
    lk.write("apogee_star", next(S.spectra("apogee_star", src.column("sdss_id").to_numpy()[:24], seed=4)))
    pks = lk.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    res = S.results("aspcap", pks, seed=5)
    order = np.arange(len(pks), dtype=np.int32)
    res = res.set_column(res.column_names.index("continuum_order"), "continuum_order", pa.array(order, mask=order % 3 == 0))
    lk.write("aspcap", res)
    return lk


READS: dict[str, Callable[[Lake, str], Any]] = {
    "duckdb": lambda lk, q: lk.connect().sql(q),
    "arrow": lambda lk, q: lk.sql(q),
    "pandas": lambda lk, q: lk.sql(q).to_pandas(),
}
STATE = "SELECT spectrum_pk, task_pk, created, teff, logg, result_flags, continuum_order, tag FROM aspcap ORDER BY spectrum_pk"


def _bump_teff(data: Any) -> Any:
    """The frame with teff + 1, each library its own way (a DuckDB result stays a DuckDB relation)."""
    import pandas as pd
    import polars as pl

    if hasattr(data, "project"):  # a DuckDB relation (a lake connection wraps DuckDB's own)
        return data.project("* REPLACE (teff + 1 AS teff)")
    if isinstance(data, pl.DataFrame):
        return data.with_columns(pl.col("teff") + 1.0)
    if isinstance(data, pd.DataFrame):
        return data.assign(teff=data["teff"] + 1.0)
    assert isinstance(data, pa.Table)
    return data.set_column(data.column_names.index("teff"), "teff", pa.compute.add(data.column("teff"), 1.0))


@pytest.mark.parametrize("how", ["duckdb", "arrow", "pandas", "polars", "duckdb-summary-view"])
def test_rows_read_from_the_lake_can_be_changed_and_written_back(lake: Lake, how: str) -> None:
    before = {r["spectrum_pk"]: r for r in lake.sql(STATE).to_pylist()}
    where = "spectrum_pk % 2 = 0"
    if how == "polars":
        import polars as pl

        read: Any = lake.scan("aspcap").filter((pl.col("spectrum_pk") % 2) == 0).collect()
        assert "flag_bad" in read.columns and "flag_low_snr" in read.columns
    elif how == "duckdb-summary-view":
        read = lake.connect().sql(f"SELECT * FROM aspcap_summary WHERE {where}")
        assert {"ra", "obj", "spectrum_table", "flag_warn"} <= set(read.columns)
    else:
        read = READS[how](lake, f"SELECT * FROM aspcap WHERE {where}")
    changed = _bump_teff(read)
    lake.upsert("aspcap", changed)
    after = {r["spectrum_pk"]: r for r in lake.sql(STATE).to_pylist()}
    assert sorted(after) == sorted(before)  # replaced, not added
    for pk, old in before.items():
        new = after[pk]
        assert (new["task_pk"], new["created"], new["result_flags"], new["tag"]) == (
            old["task_pk"],
            old["created"],
            old["result_flags"],
            old["tag"],
        )
        assert new["continuum_order"] == old["continuum_order"]  # nulls stay null, integers stay integers
        assert np.float32(new["logg"]).tobytes() == np.float32(old["logg"]).tobytes()  # NaN-safe equality
        bump = 1.0 if pk % 2 == 0 else 0.0
        assert np.float32(new["teff"]).tobytes() == np.float32(np.float32(old["teff"]) + np.float32(bump)).tobytes()


def test_unknown_columns_are_still_refused_by_name(lake: Lake) -> None:
    rows = lake.sql("SELECT * FROM aspcap LIMIT 2")
    rows = rows.append_column("teff_corrected", pa.array([1.0, 2.0]))
    with pytest.raises(ValidationError, match=r"aspcap: unknown column\(s\) teff_corrected;") as err:
        lake.upsert("aspcap", rows)
    assert err.value.column == "teff_corrected" and "\n" not in str(err.value)


def test_derived_columns_are_exactly_what_the_views_add(lake: Lake) -> None:
    """The one list of derived names agrees with the DuckDB views and the Polars scan built from it."""
    schema = lake.catalog.schema
    con = lake.connect()
    for table in ("aspcap", "astronn", "apogee_star", "source"):
        tbl = schema.table(table)
        shown = {r[0] for r in con.execute(f"DESCRIBE {table}").fetchall()}
        if tbl.kind == "pipeline":
            shown |= {r[0] for r in con.execute(f"DESCRIBE {table}_summary").fetchall()}
        assert shown - set(tbl.column_names) == derived_columns(schema, tbl), table
        assert set(lake.scan(table).collect_schema().names()) - set(tbl.column_names) <= derived_columns(schema, tbl)
    assert "source_created" in derived_columns(schema, schema.table("aspcap"))  # renamed on a clash


def test_pandas_integer_columns_with_missing_values(lake: Lake) -> None:
    """pandas turns int columns with nulls into float64 + NaN: whole numbers are accepted (NaN -> null),
    fractions are refused; for Arrow and Polars input a float column is refused as before."""
    import pandas as pd
    import polars as pl

    tbl = load_schema().table("source")
    frame = pd.DataFrame({"sdss_id": [1, 2, 3], "ra": [1.0, 2.0, 3.0], "dec": [0.0, 0.5, 1.0]})
    frame["w1uflags"] = [4.0, np.nan, 2.0**40]
    out = conform(tbl, frame)
    assert out.column("w1uflags").to_pylist() == [4, None, 2**40]
    with pytest.raises(ValidationError, match=r"source\.w1uflags: row 1 is 2\.5, expected int64 \(floats are not silently"):
        conform(tbl, frame.assign(w1uflags=[1.0, 2.5, np.nan]))
    for other in (pa.Table.from_pandas(frame).replace_schema_metadata(None), pl.from_pandas(frame)):
        with pytest.raises(ValidationError, match=r"source\.w1uflags: expected int64, got double"):
            conform(tbl, other)


def test_dict_columns_of_different_lengths_are_one_line_errors(tmp_path: Path) -> None:
    lk = Lake.init(tmp_path / "lk")
    with pytest.raises(ValidationError, match=r"^source: columns have different lengths \(sdss_id=3, ra=2, dec=3\)") as err:
        lk.write("source", {"sdss_id": [1, 2, 3], "ra": [1.0, 2.0], "dec": [0.0, 0.1, 0.2]})
    assert "\n" not in str(err.value)
    with pytest.raises(ValidationError, match=r"^source: columns have different lengths"):
        lk.upsert("source", {"sdss_id": [1, 2, 3], "ra": [1.0, 2.0], "dec": [0.0, 0.1, 0.2]})
    assert lk.version == 0


@pytest.mark.parametrize(
    ("column", "value"),
    [("dec", 95.0), ("dec", -90.5), ("ra", 360.0), ("ra", -0.1), ("ra", 1e9)],
)
def test_positions_outside_their_declared_range_are_refused(tmp_path: Path, column: str, value: float) -> None:
    lk = Lake.init(tmp_path / "lk")
    rows = {"sdss_id": [1, 2, 3], "ra": [10.0, 20.0, 30.0], "dec": [-10.0, 0.0, 10.0]}
    rows[column] = [rows[column][0], value, rows[column][2]]
    with pytest.raises(ValidationError, match=rf"^source\.{column}: row 1 is {value!r}, outside its declared range") as err:
        lk.write("source", rows)
    assert (err.value.table, err.value.column, err.value.row) == ("source", column, 1)
    assert lk.version == 0


def test_an_error_row_counts_from_the_first_row_of_the_call(tmp_path: Path) -> None:
    """An upsert streams in batches; the row an error names is the row of the data as given."""
    lk = Lake.init(tmp_path / "lk")
    n = 25
    ra = np.full(n, 5.0)
    ra[17] = np.nan
    with pytest.raises(ValidationError, match=r"source: row 17 has no finite ra/dec") as err:
        lk.upsert("source", {"sdss_id": np.arange(1, n + 1), "ra": ra, "dec": np.linspace(-10, 10, n)}, batch_rows=10)
    assert (err.value.column, err.value.row) == ("ra", 17)
    assert lk.version == 0


@settings(max_examples=60, deadline=None)
@given(ra=st.floats(allow_nan=False, width=64), dec=st.floats(allow_nan=False, width=64))
def test_range_check_accepts_exactly_ra_in_0_360_and_dec_in_minus_90_90(ra: float, dec: float) -> None:
    tbl = load_schema().table("source")
    rows = pa.table({"sdss_id": [1], "ra": [ra], "dec": [dec]})
    ok = 0 <= ra < 360 and -90 <= dec <= 90
    if ok:
        assert conform(tbl, rows).schema == storage_schema(tbl)
    else:
        with pytest.raises(ValidationError, match="outside its declared range"):
            conform(tbl, rows)


def test_range_declarations_must_be_numbers_on_numeric_columns() -> None:
    from pydantic import ValidationError as DeclarationError

    from astra_lake.schema.declarations import ColumnDecl

    assert ColumnDecl.model_validate({"name": "x", "type": "float64", "minimum": -1, "maximum": 1}).maximum == 1
    for bad, why in (
        ({"type": "string", "minimum": 0}, "numeric type"),
        ({"type": "float32", "maximum": "ten"}, "maximum"),
        ({"type": "float32", "maximum": True}, "maximum"),
        ({"type": "int32", "minimum": 2, "maximum": 1}, "minimum 2 > maximum 1"),
    ):
        with pytest.raises(DeclarationError, match=why):
            ColumnDecl.model_validate({"name": "x", **bad})
