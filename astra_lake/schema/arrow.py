"""Arrow schemas of every table, with unit and description in the field metadata."""

from __future__ import annotations

import json
import re

import pyarrow as pa

from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.model import Column, Table

_SCALAR: dict[str, pa.DataType] = {
    "bool": pa.bool_(),
    "int16": pa.int16(),
    "int32": pa.int32(),
    "int64": pa.int64(),
    "float32": pa.float32(),
    "float64": pa.float64(),
    "string": pa.string(),
    "binary": pa.binary(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "list<float32>": pa.list_(pa.float32()),
}
_FIXED = re.compile(r"^fixed<(\w+),(\d+)>$")


def arrow_type(type_name: str) -> pa.DataType:
    """Arrow type of a data_schema type string (``fixed<float32,8575>`` is a fixed-size list)."""
    match = _FIXED.match(type_name)
    if match:
        return pa.list_(_SCALAR[match.group(1)], int(match.group(2)))
    return _SCALAR[type_name]


def arrow_field(column: Column) -> pa.Field:
    meta = {"description": column.description}
    if column.unit:
        meta["unit"] = column.unit
    return pa.field(column.name, arrow_type(column.type), nullable=column.nullable, metadata=meta)


def arrow_schema(table: Table | str) -> pa.Schema:
    """The Arrow schema of a table (columns in declaration order)."""
    tbl = load_schema().table(table) if isinstance(table, str) else table
    meta = {"astra_lake.table": tbl.name, "astra_lake.kind": tbl.kind, "astra_lake.description": tbl.description}
    if tbl.grid is not None:
        meta["astra_lake.grid"] = json.dumps(tbl.grid.__dict__)
    return pa.schema([arrow_field(c) for c in tbl.columns], metadata=meta)


def describe_schemas(schema: Schema | None = None) -> str:
    """A stable, reviewable JSON rendering of every Arrow schema (the checked-in generated file)."""
    schema = schema or load_schema()
    out = {}
    for name, tbl in sorted(schema.tables.items()):
        out[name] = {
            "kind": tbl.kind,
            "fields": [
                {
                    "name": c.name,
                    "type": str(arrow_type(c.type)),
                    "nullable": c.nullable,
                    "unit": c.unit,
                    "description": c.description,
                }
                for c in tbl.columns
            ],
        }
    return json.dumps(out, indent=1, ensure_ascii=False) + "\n"
