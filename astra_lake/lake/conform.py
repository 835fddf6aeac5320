"""Validate data offered to the lake against data_schema/ and convert it to the storage schema.

Nothing is written unless the whole batch passes; every error names the table, column and (where it
helps) the first offending row, and says what was expected.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astra_lake.errors import ValidationError
from astra_lake.schema.arrow import arrow_schema
from astra_lake.schema.loader import load_schema
from astra_lake.schema.model import Table


def __getattr__(name: str) -> frozenset[str]:
    """``MANAGED``: the columns the writer fills when absent (``roles.managed`` of data_schema/common.yaml)."""
    if name == "MANAGED":
        return load_schema().roles.managed
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_STORAGE: dict[int, tuple[Table, pa.Schema]] = {}


def storage_schema(table: Table) -> pa.Schema:
    """The schema of the Parquet files: fixed-width pixel arrays are stored as lists (Delta has no
    fixed-size list type) of non-null elements (which Parquet readers decode 2.5x faster: no definition
    levels per pixel); their width is kept in the schema metadata as ``astra_lake.shape.<col>``.
    Kept per declaration object (readers ask for it on every lookup: 0.6-3 ms to build)."""
    hit = _STORAGE.get(id(table))
    if hit is not None and hit[0] is table:
        return hit[1]
    if len(_STORAGE) > 1024:
        _STORAGE.clear()
    schema = _storage_schema(table)
    _STORAGE[id(table)] = (table, schema)
    return schema


def _storage_schema(table: Table) -> pa.Schema:
    logical = arrow_schema(table)
    fields, meta = [], dict(logical.metadata or {})
    for f in logical:
        if pa.types.is_fixed_size_list(f.type):
            meta[f"astra_lake.shape.{f.name}".encode()] = str(f.type.list_size).encode()
            element = pa.field("element", f.type.value_type, nullable=False)
            fields.append(pa.field(f.name, pa.list_(element), nullable=f.nullable, metadata=f.metadata))
        else:
            fields.append(f)
    return pa.schema(fields, metadata=meta)


def is_pandas(data: Any) -> bool:
    return type(data).__module__.split(".")[0] == "pandas" and hasattr(data, "columns")


def as_arrow(data: Any, table: str = "rows") -> pa.Table:
    """Accept pyarrow tables/batches, Polars/pandas frames, DuckDB results, dicts of arrays, or any Arrow
    stream. pandas frames keep their ``pandas`` schema metadata (see :func:`conform`), never their index."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, dict):
        arrays = {k: _to_array(v) for k, v in data.items()}
        lengths = {k: len(v) for k, v in arrays.items()}
        if len(set(lengths.values())) > 1:
            given = ", ".join(f"{k}={n}" for k, n in lengths.items())
            raise ValidationError(f"{table}: columns have different lengths ({given}); give one value per row in every column")
        return pa.table(arrays)
    if is_pandas(data):
        return pa.Table.from_pandas(data, preserve_index=False)
    if hasattr(data, "to_arrow"):
        return pa.table(data.to_arrow())
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise ValidationError(
        f"{table}: cannot read rows from a {type(data).__name__}; give a pyarrow/Polars/pandas table, a DuckDB result "
        "or a dict of arrays"
    )


def _to_array(values: Any) -> pa.Array | pa.ChunkedArray:
    if isinstance(values, pa.Array | pa.ChunkedArray):
        return values
    arr = np.asarray(values) if not isinstance(values, list) else None
    if arr is not None and arr.ndim == 2:
        return pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])
    try:
        return pa.array(values)
    except OverflowError as exc:
        raise ValidationError(f"value does not fit in 64 bits: {exc}") from None


def first_row(mask: pa.ChunkedArray | pa.Array) -> int:
    idx = np.flatnonzero(np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool))
    return int(idx[0]) if len(idx) else -1


def invalid(table: Table, column: str, what: str, row: int | None = None) -> ValidationError:
    """A ValidationError located at ``table.column`` (and ``row``): ``"<table>.<column>: <what>"``."""
    return ValidationError(f"{table.name}.{column}: {what}", table=table.name, column=column, row=row)


def _cast_column(
    table: Table, name: str, col: pa.ChunkedArray, target: pa.DataType, shape: int | None, *, from_pandas: bool = False
) -> pa.ChunkedArray:
    if shape is not None:
        if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type)):
            raise invalid(table, name, f"expected an array of {shape} values per row, got {col.type}")
        lengths = pc.list_value_length(col)
        bad = pc.and_(pc.is_valid(lengths), pc.not_equal(lengths, shape))
        if pc.any(bad).as_py():
            row = first_row(bad)
            raise invalid(table, name, f"row {row} has {lengths[row].as_py()} pixels, expected {shape}", row)
        if pc.list_flatten(col).null_count:
            parents = pc.list_parent_indices(col).to_numpy()
            row = int(parents[first_row(pc.is_null(pc.list_flatten(col)))])
            raise invalid(table, name, f"row {row} has null pixels; store NaN (flux) or ivar 0 instead", row)
    if col.type == target:
        return col
    if pa.types.is_integer(target) and pa.types.is_floating(col.type):
        if from_pandas:
            return _integral_floats(table, name, col, target)
        raise invalid(table, name, f"expected {target}, got {col.type} (floats are not silently truncated to integers)")
    if pa.types.is_integer(target) and (pa.types.is_string(col.type) or pa.types.is_binary(col.type)):
        raise invalid(table, name, f"expected {target}, got {col.type}")
    if target == pa.int64() and col.type == pa.uint64():
        return col.cast(pa.int64(), safe=False)  # a 64-bit flag pattern: reinterpret, never reject
    try:
        return col.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise invalid(table, name, f"expected {target}, got {col.type}: {exc}") from None


def _integral_floats(table: Table, name: str, col: pa.ChunkedArray, target: pa.DataType) -> pa.ChunkedArray:
    """A pandas integer column with missing values arrives as float64 with NaN: NaN becomes null and
    whole numbers become integers; a fraction is still an error (never truncated)."""
    values = col.to_numpy()
    missing = np.isnan(values)
    fraction = ~missing & (values != np.round(values))
    if fraction.any():
        row = int(np.flatnonzero(fraction)[0])
        value = float(values[row])
        raise invalid(table, name, f"row {row} is {value!r}, expected {target} (floats are not silently truncated)", row)
    try:
        return pa.chunked_array([pa.array(values, mask=missing).cast(target, safe=True)])
    except pa.ArrowInvalid as exc:
        raise invalid(table, name, f"expected {target}: {exc}") from None


def check_range(table: Table, name: str, col: pa.ChunkedArray) -> None:
    """Refuse values outside the column's declared ``[minimum, maximum]`` (null and NaN are not values)."""
    decl = table.column(name)
    if decl.minimum is None and decl.maximum is None:
        return
    low = pc.less(col, decl.minimum) if decl.minimum is not None else None
    high = pc.greater(col, decl.maximum) if decl.maximum is not None else None
    out = pc.fill_null(low if high is None else high if low is None else pc.or_(low, high), False)
    if pc.any(out).as_py():
        row = first_row(out)
        bounds = f"[{'-inf' if decl.minimum is None else decl.minimum}, {'inf' if decl.maximum is None else decl.maximum}]"
        where = f"data_schema/tables/{table.name}.yaml"
        raise invalid(table, name, f"row {row} is {col[row].as_py()!r}, outside its declared range {bounds} ({where})", row)


def conform(
    table: Table, data: Any, *, managed: Collection[str] | None = None, derived: frozenset[str] = frozenset()
) -> pa.Table:
    """Validate ``data`` for ``table`` and return it in the storage schema (column order included).

    Columns the writer manages (``managed``, default ``roles.managed`` of data_schema/) may be absent;
    other absent nullable columns become null (or their declared fill). Columns named in ``derived``
    (what reads add: flag booleans, summary-view joins; see :func:`astra_lake.schema.views.derived_columns`)
    are dropped, so rows read from the lake can be written back. Absent non-nullable columns, unknown
    columns, wrong types, wrong pixel counts, values outside a declared range and nulls in non-nullable
    columns are errors. pandas integer columns with missing values (float64 with NaN) are accepted when
    every value is a whole number.
    """
    managed = load_schema().roles.managed if managed is None else managed
    raw = as_arrow(data, table.name)
    from_pandas = b"pandas" in (raw.schema.metadata or {})
    schema = storage_schema(table)
    unknown = [c for c in raw.column_names if c not in schema.names and c not in derived]
    if unknown:
        raise ValidationError(
            f"{table.name}: unknown column(s) {', '.join(unknown)}; declared columns are in data_schema/tables/{table.name}.yaml",
            table=table.name,
            column=unknown[0],
        )
    dup = {c for c in raw.column_names if raw.column_names.count(c) > 1}
    if dup:
        raise ValidationError(f"{table.name}: column(s) given twice: {', '.join(sorted(dup))}", table=table.name, column=min(dup))
    meta = schema.metadata or {}
    out = []
    n = raw.num_rows
    for field in schema:
        shape_raw = meta.get(f"astra_lake.shape.{field.name}".encode())
        shape = int(shape_raw) if shape_raw else None
        if field.name in raw.column_names:
            col = _cast_column(table, field.name, raw.column(field.name), field.type, shape, from_pandas=from_pandas)
            check_range(table, field.name, col)
        elif field.name in managed:
            col = pa.chunked_array([pa.nulls(n, field.type)])
        elif field.nullable:
            fill = table.column(field.name).fill
            col = pa.chunked_array([pa.array([fill] * n, field.type) if fill is not None else pa.nulls(n, field.type)])
        else:
            raise ValidationError(
                f"{table.name}: missing required column {field.name!r} ({field.type})", table=table.name, column=field.name
            )
        if not field.nullable and field.name not in managed and col.null_count:
            row = first_row(col.is_null())
            raise invalid(table, field.name, f"row {row} is null, but the column is required", row)
        out.append(col)
    return pa.Table.from_arrays(out, schema=schema)


# -- schema on read ---------------------------------------------------------------------------------
# A new nullable column is added by evolving the table's schema, not by rewriting its files
# (:mod:`astra_lake.lake.migrate`): files written before it lack the column. Every reader of a
# snapshot's files goes through the helpers below, which present the snapshot's declared storage
# schema: a column a file lacks is null, of its declared type.


def on_read(part: pa.Table, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Rows read from one data file in the declared storage ``schema`` (only ``columns``, in that order,
    when given): columns the file lacks are null, the others cast to their declared type."""
    names = schema.names if columns is None else columns
    if part.column_names == names and all(part.schema.field(c).type == schema.field(c).type for c in names):
        return part
    fields = [schema.field(c) for c in names]
    cols = [part.column(f.name).cast(f.type) if f.name in part.column_names else pa.nulls(part.num_rows, f.type) for f in fields]
    return pa.Table.from_arrays(cols, schema=pa.schema(fields, metadata=schema.metadata))


def read_file(path: str, schema: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """A whole data file (``columns`` of it) in the declared storage ``schema`` (:func:`on_read`)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path)
    have = set(pf.schema_arrow.names)
    want = schema.names if columns is None else columns
    return on_read(pf.read(columns=[c for c in want if c in have], use_threads=False), schema, want)


def parquet_scan(paths: list[str], columns: str = "*", *, options: str = "", schema: pa.Schema | None = None) -> str:
    """SQL over exactly these files (never a directory glob), with extra ``read_parquet`` ``options``. The
    HATS ``Norder=/Dir=/Npix=`` folders are not columns: hive partitioning (which DuckDB would otherwise
    detect) stays off. With the declared storage ``schema`` (:attr:`DeltaStore.read_schema`: files may
    lack columns) the scan has exactly its columns and types, a column no file holds included: the files
    are read by name (``union_by_name``) under a typed empty row set."""
    quoted = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
    by_name = ", union_by_name = true" if schema is not None else ""
    scan = f"read_parquet([{quoted}], hive_partitioning = false{by_name}{', ' + options if options else ''})"
    if schema is not None:
        typed = ", ".join(f'CAST(NULL AS {duck_type(f.type)}) AS "{f.name}"' for f in schema)
        cols = ", ".join(f'CAST("{f.name}" AS {duck_type(f.type)}) AS "{f.name}"' for f in schema)
        extra = ", filename" if "filename = true" in options else ""
        scan = f"(SELECT {cols}{extra} FROM (SELECT {typed} WHERE false UNION ALL BY NAME SELECT * FROM {scan}))"
    return scan if columns == "*" else f"(SELECT {columns} FROM {scan})"


def duck_type(t: pa.DataType) -> str:
    """DuckDB's name of an Arrow type of the storage schema."""
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return duck_type(t.value_type) + "[]"
    if pa.types.is_timestamp(t):
        return "TIMESTAMPTZ" if t.tz else _TIMESTAMPS[t.unit]
    return _SCALARS[t]


_TIMESTAMPS = {"s": "TIMESTAMP_S", "ms": "TIMESTAMP_MS", "us": "TIMESTAMP", "ns": "TIMESTAMP_NS"}
_SCALARS = {
    pa.bool_(): "BOOLEAN",
    pa.int8(): "TINYINT",
    pa.int16(): "SMALLINT",
    pa.int32(): "INTEGER",
    pa.int64(): "BIGINT",
    pa.float32(): "FLOAT",
    pa.float64(): "DOUBLE",
    pa.string(): "VARCHAR",
    pa.large_string(): "VARCHAR",
    pa.binary(): "BLOB",
    pa.large_binary(): "BLOB",
}
