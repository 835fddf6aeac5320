"""The columns the lake's read paths add to a table's stored ones: one place that names them.

Table views and Polars scans add ``flag_warn`` / ``flag_bad`` and one boolean per named flag of the
summary flag column; ``<pipeline>_summary`` views add the source's and the spectrum's columns (named
``source_<c>`` / ``spectrum_<c>`` where the pipeline already has a column ``<c>``). The DuckDB views are
built from these names, and writers drop them, so rows read from the lake can be written back.
"""

from __future__ import annotations

from astra_lake.schema.flags import defines
from astra_lake.schema.loader import Schema
from astra_lake.schema.model import Table


def flag_view_columns(table: Table) -> list[str]:
    """``flag_warn`` / ``flag_bad`` (where defined) and every named flag of the summary column."""
    fc = table.summary_column
    return [] if fc is None else defines(table) + fc.all_flag_names()


def view_columns(table: Table) -> list[str]:
    """Columns of a table's view: stored columns (hidden ones dropped) then the flag booleans."""
    return [c.name for c in table.columns if not c.hidden] + flag_view_columns(table)


def spectra_view_columns(schema: Schema) -> list[str]:
    """Columns of the ``spectra`` view: ``spectrum_table`` then every spectrum table's non-pixel columns."""
    names = ["spectrum_table"]
    for t in schema.of_kind("spectrum"):
        names += [c for c in view_columns(t) if c not in t.pixel_columns and c not in names]
    return names


def summary_view_columns(schema: Schema, table: Table) -> list[tuple[str, str, str]]:
    """``(relation, column, name)`` of each column of ``<table>_summary``, in order; the relation is
    ``pipeline``, ``source`` or ``spectrum``. On a name clash the pipeline's column wins."""
    own = view_columns(table)
    items = [("pipeline", c, c) for c in own]
    taken = set(own)
    joined = (("source", [c.name for c in schema.table("source").columns]), ("spectrum", spectra_view_columns(schema)))
    for relation, cols in joined:
        for c in cols:
            if c in schema.roles.identity:  # the join's identity: shown once, from the pipeline row
                continue
            name = f"{relation}_{c}" if c in taken else c
            items.append((relation, c, name))
            taken.add(name)
    return items


def derived_columns(schema: Schema, table: Table) -> frozenset[str]:
    """Names that reads of ``table`` carry but that are not stored in it: its flag booleans and, for a
    pipeline, the source and spectrum columns of its summary view."""
    names = set(flag_view_columns(table))
    if table.kind == "pipeline":
        names |= {name for relation, _, name in summary_view_columns(schema, table) if relation != "pipeline"}
    return frozenset(names - set(table.column_names))
