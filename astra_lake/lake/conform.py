"""Validate data offered to the lake against data_schema/ and convert it to the storage schema.

Nothing is written unless the whole batch passes; every error names the table, column and (where it
helps) the first offending row, and says what was expected.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from astra_lake.errors import ValidationError
from astra_lake.schema.arrow import arrow_schema
from astra_lake.schema.model import Table

# Columns the writer fills when they are absent (identity, spatial index, timestamps, derived keys).
MANAGED = {
    "_healpix_29",
    "source_pk",
    "spectrum_pk",
    "task_pk",
    "created",
    "modified",
    "v_astra_major_minor",
    "sdss_id",
    "source_key",
}


def storage_schema(table: Table) -> pa.Schema:
    """The schema of the Parquet files: fixed-width pixel arrays are stored as lists (Delta has no
    fixed-size list type) of non-null elements (which Parquet readers decode 2.5x faster: no definition
    levels per pixel); their width is kept in the schema metadata as ``astra_lake.shape.<col>``."""
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


def as_arrow(data: Any) -> pa.Table:
    """Accept pyarrow tables/batches, Polars/pandas frames, dicts of arrays, or any Arrow stream."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    if isinstance(data, dict):
        return pa.table({k: _to_array(v) for k, v in data.items()})
    if hasattr(data, "to_arrow"):
        return pa.table(data.to_arrow())
    if hasattr(data, "__arrow_c_stream__"):
        return pa.table(data)
    raise ValidationError(f"cannot read rows from a {type(data).__name__}; give a pyarrow/Polars table or a dict of arrays")


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


def _cast_column(table: Table, name: str, col: pa.ChunkedArray, target: pa.DataType, shape: int | None) -> pa.ChunkedArray:
    where = f"{table.name}.{name}"
    if shape is not None:
        if not (pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type)):
            raise ValidationError(f"{where}: expected an array of {shape} values per row, got {col.type}")
        lengths = pc.list_value_length(col)
        bad = pc.and_(pc.is_valid(lengths), pc.not_equal(lengths, shape))
        if pc.any(bad).as_py():
            row = first_row(bad)
            raise ValidationError(f"{where}: row {row} has {lengths[row].as_py()} pixels, expected {shape}")
        if pc.list_flatten(col).null_count:
            parents = pc.list_parent_indices(col).to_numpy()
            row = int(parents[first_row(pc.is_null(pc.list_flatten(col)))])
            raise ValidationError(f"{where}: row {row} has null pixels; store NaN (flux) or ivar 0 instead")
    if col.type == target:
        return col
    if pa.types.is_integer(target) and pa.types.is_floating(col.type):
        raise ValidationError(f"{where}: expected {target}, got {col.type} (floats are not silently truncated to integers)")
    if pa.types.is_integer(target) and (pa.types.is_string(col.type) or pa.types.is_binary(col.type)):
        raise ValidationError(f"{where}: expected {target}, got {col.type}")
    if target == pa.int64() and col.type == pa.uint64():
        return col.cast(pa.int64(), safe=False)  # a 64-bit flag pattern: reinterpret, never reject
    try:
        return col.cast(target, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise ValidationError(f"{where}: expected {target}, got {col.type}: {exc}") from None


def conform(table: Table, data: Any, *, managed: set[str] | None = None) -> pa.Table:
    """Validate ``data`` for ``table`` and return it in the storage schema (column order included).

    Columns the writer manages may be absent; other absent nullable columns become null (or their
    declared fill); absent non-nullable columns, unknown columns, wrong types, wrong pixel counts and
    nulls in non-nullable columns are errors.
    """
    managed = MANAGED if managed is None else managed
    raw = as_arrow(data)
    schema = storage_schema(table)
    unknown = [c for c in raw.column_names if c not in schema.names]
    if unknown:
        raise ValidationError(
            f"{table.name}: unknown column(s) {', '.join(unknown)}; declared columns are in data_schema/tables/{table.name}.yaml"
        )
    dup = {c for c in raw.column_names if raw.column_names.count(c) > 1}
    if dup:
        raise ValidationError(f"{table.name}: column(s) given twice: {', '.join(sorted(dup))}")
    meta = schema.metadata or {}
    out = []
    n = raw.num_rows
    for field in schema:
        shape_raw = meta.get(f"astra_lake.shape.{field.name}".encode())
        shape = int(shape_raw) if shape_raw else None
        if field.name in raw.column_names:
            col = _cast_column(table, field.name, raw.column(field.name), field.type, shape)
        elif field.name in managed:
            col = pa.chunked_array([pa.nulls(n, field.type)])
        elif field.nullable:
            fill = table.column(field.name).fill
            col = pa.chunked_array([pa.array([fill] * n, field.type) if fill is not None else pa.nulls(n, field.type)])
        else:
            raise ValidationError(f"{table.name}: missing required column {field.name!r} ({field.type})")
        if not field.nullable and field.name not in managed and col.null_count:
            row = first_row(col.is_null())
            raise ValidationError(f"{table.name}.{field.name}: row {row} is null, but the column is required")
        out.append(col)
    return pa.Table.from_arrays(out, schema=schema)
