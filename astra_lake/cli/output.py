"""Query results out of the CLI, from Arrow in Python (DuckDB itself never writes files).

Pixel arrays (list columns) are written whole to Parquet, JSON and JSONL; in CSV and the terminal table
they are summarised as ``[8575 x float]`` (CSV has no arrays), with a note saying so.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa

from astra_lake.cli._common import console, note
from astra_lake.errors import InvalidArgumentError


def check_writable(path: Path) -> None:
    """Refuse an output path whose folder does not exist, or that is a folder, before running the query."""
    if path.is_dir():
        raise InvalidArgumentError(f"--output {path} is a directory; give a file name")
    if not path.parent.is_dir():
        raise InvalidArgumentError(f"--output {path}: folder {path.parent} does not exist; create it or choose another path")


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t)


def summarised(table: pa.Table) -> pa.Table:
    """List columns as ``[n x type]`` strings, struct/map columns as JSON text: what CSV and a terminal can show."""
    import pyarrow.compute as pc

    columns = []
    shortened = []
    for name, col in zip(table.column_names, table.columns, strict=True):
        if _is_list(col.type):
            item = col.type.value_type
            item_name = f"float{item.bit_width}" if pa.types.is_floating(item) else str(item)
            lengths = pc.cast(pc.list_value_length(col), pa.string())
            col = pc.binary_join_element_wise("[", lengths, f" x {item_name}]", "")
            shortened.append(name)
        elif pa.types.is_nested(col.type):
            col = pa.array([None if v is None else json.dumps(_jsonable(v)) for v in col.to_pylist()], pa.string())
        columns.append(col)
    if shortened:
        names = ", ".join(shortened)
        note(f"note: array column(s) {names} shown as [length x type]; --format parquet, json or jsonl writes them whole")
    return pa.table(columns, names=table.column_names)


def print_table(table: pa.Table) -> None:
    from rich.table import Table as RichTable

    out = RichTable(*table.column_names)
    for row in summarised(table).to_pylist():
        out.add_row(*[cell(v) for v in row.values()])
    console.print(out)


def print_rows_as_columns(table: pa.Table) -> None:
    """Few wide rows (one source's results) as a table with a line per column and a column per row."""
    from rich.table import Table as RichTable

    rows = summarised(table).to_pylist()
    out = RichTable("column", *[f"row {i + 1}" for i in range(len(rows))])
    for name in table.column_names:
        out.add_row(name, *[cell(r[name]) for r in rows])
    console.print(out)


def cell(value: object) -> str:
    """A value as the terminal shows it."""
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _jsonable(value: Any) -> Any:
    """A value as strict JSON: NaN/inf -> null, decimals as numbers, times in ISO 8601, bytes in hex."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return _jsonable(float(value))
    if isinstance(value, dt.timedelta):
        return str(value)
    return value


def write(table: pa.Table, fmt: str, output: Path | None) -> None:
    """Write ``table`` as csv, json (one array), jsonl (a line per row) or parquet to ``output`` or stdout."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert output is not None
        pq.write_table(table, output)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(summarised(table), str(output) if output else sys.stdout.buffer)
    elif fmt in ("json", "jsonl"):
        rows = [_jsonable(r) for r in table.to_pylist()]
        if fmt == "json":
            text = json.dumps(rows, allow_nan=False) + "\n"
        else:
            text = "".join(json.dumps(r, allow_nan=False) + "\n" for r in rows)
        if output is not None:
            output.write_text(text)
        else:
            sys.stdout.write(text)
    else:
        raise InvalidArgumentError(f"unknown format {fmt!r}; choose table, csv, json, jsonl or parquet")
