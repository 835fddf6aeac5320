"""Export a query result as a release file: Parquet with units and descriptions in the field metadata
(taken from data_schema/), the lake version or tag it came from, and a SHA-256 checksum file."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from astra_lake.schema.loader import Schema


def _described(table: pa.Table, schema: Schema, tables: list[str]) -> pa.Table:
    meta: dict[str, dict[str, str]] = {}
    for name in tables:
        for c in schema.table(name).columns:
            meta.setdefault(c.name, {"description": c.description, **({"unit": c.unit} if c.unit else {})})
    fields = [f.with_metadata(meta.get(f.name, {})) for f in table.schema]
    return table.cast(pa.schema(fields, metadata=table.schema.metadata))


def export_parquet(
    con: duckdb.DuckDBPyConnection, query: str, path: Path, *, schema: Schema, tables: list[str], provenance: dict[str, object]
) -> dict[str, object]:
    """Write ``query`` to ``path`` (zstd Parquet) and ``path.sha256``; returns rows, bytes and checksum."""
    result = _described(con.sql(query).to_arrow_table(), schema, tables)
    result = result.replace_schema_metadata(
        {**(result.schema.metadata or {}), b"astra_lake.provenance": json.dumps(provenance, default=str).encode()}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(result, path, compression="zstd")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    path.with_name(path.name + ".sha256").write_text(f"{digest}  {path.name}\n")
    return {"rows": result.num_rows, "bytes": path.stat().st_size, "sha256": digest}
