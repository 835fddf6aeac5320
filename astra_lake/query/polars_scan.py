"""Polars LazyFrames over a snapshot, with pixel arrays as ``pl.Array`` and the flag expressions."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from astra_lake.lake.conform import storage_schema
from astra_lake.query.snapshot import Snapshot
from astra_lake.schema.flags import defines
from astra_lake.schema.polars_flags import named_flag_exprs, summary_expr


def scan(snapshot: Snapshot, table: str, *, flags: bool = True) -> pl.LazyFrame:
    """Lazy scan of a table; predicates and projections push down into the Parquet reader."""
    tbl = snapshot.catalog.schema.table(table)
    paths = snapshot.paths(table)
    schema = storage_schema(tbl)
    empty = pl.from_arrow(schema.empty_table())
    lf = scan_files(paths, snapshot.catalog.store(table).read_schema) if paths else empty.lazy()  # type: ignore[union-attr]
    casts = []
    for c in tbl.columns:
        if c.type.startswith("fixed<"):
            width = int(c.type.split(",")[1].rstrip(">"))
            casts.append(pl.col(c.name).cast(pl.Array(_inner(c.type), width)))
    if casts:
        lf = lf.with_columns(casts)
    return with_flags(lf, snapshot, table) if flags else lf


def with_flags(lf: pl.LazyFrame, snapshot: Snapshot, table: str) -> pl.LazyFrame:
    """``lf`` (a table's stored columns) plus flag_warn / flag_bad and one boolean per named flag, by the
    rules of the data_schema the snapshot was written with."""
    tbl = snapshot.catalog.schema.table(table)
    if tbl.summary_column is None:
        return lf
    version = "v_astra" if "v_astra" in tbl.column_names else None
    written = snapshot.catalog.schema
    flags = [summary_expr(table, w, v_astra=version, schema=written) for w in defines(tbl)]
    return lf.with_columns(flags + named_flag_exprs(table, written))


def scan_files(paths: list[str], schema: pa.Schema | None) -> pl.LazyFrame:
    """Polars' scan of exactly these files; with the declared storage ``schema`` (files may lack a
    column: :attr:`DeltaStore.read_schema`) every declared column is there, null where a file lacks it."""
    declared = None if schema is None else pl.from_arrow(schema.empty_table()).schema  # type: ignore[union-attr]
    return pl.scan_parquet(paths, schema=declared, hive_partitioning=False, missing_columns="insert", extra_columns="ignore")


def _inner(type_name: str) -> pl.DataType:
    inner = type_name.removeprefix("fixed<").split(",")[0]
    return {"float32": pl.Float32(), "float64": pl.Float64(), "int32": pl.Int32(), "int64": pl.Int64(), "int16": pl.Int16()}[
        inner
    ]
