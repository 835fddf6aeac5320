"""Release filters: a declarative YAML file that says what a release may contain.

.. code-block:: yaml

    max_mjd: 60500                 # observations after this MJD are not released
    exclude_programs: [bhm_aqmes]  # sources targeted by any carton of these programs are not released
    exclude_cartons: [mwm_yso_disk_apogee]   # carton name or label (sdss5_target_flags bits)
    omit_columns: [source.tic_v8_id, t_elapsed]   # table.column, or a column name in every table

Rows: a source targeted by an excluded carton or program is dropped with every spectrum and result
of it; a visit spectrum (``mjd``) or coadd (``max_mjd``) after the cut-off is dropped with every result
and model of it. Columns: an omitted column is dropped from every table and product; omitting a flag
column also drops the flag booleans computed from it. Every format reads the release through the
views :func:`create_release_views` makes, so no format can show what a filter excludes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import yaml

from astra_lake.errors import ReleaseError
from astra_lake.schema.loader import Schema
from astra_lake.schema.views import view_columns

KEYS = {"max_mjd", "exclude_programs", "exclude_cartons", "omit_columns"}
# Positions and the HEALPix index: every HATS catalog needs them, the lake's identity needs them.
REQUIRED_COLUMNS = {"_healpix_29", "ra", "dec", "source_pk", "spectrum_pk", "task_pk"}


@dataclass(frozen=True)
class ReleaseFilter:
    """What a release leaves out (nothing by default)."""

    max_mjd: int | None = None
    exclude_programs: tuple[str, ...] = ()
    exclude_cartons: tuple[str, ...] = ()
    omit_columns: tuple[str, ...] = ()
    origin: str = field(default="", compare=False)

    @classmethod
    def read(cls, path: Path) -> ReleaseFilter:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ReleaseError(f"{path}: cannot read the release filter: {exc}") from None
        return cls.from_dict(raw, str(path))

    @classmethod
    def from_dict(cls, raw: dict[str, Any], origin: str = "filter") -> ReleaseFilter:
        if not isinstance(raw, dict):
            raise ReleaseError(f"{origin}: a release filter is a mapping with keys {', '.join(sorted(KEYS))}")
        unknown = set(raw) - KEYS
        if unknown:
            raise ReleaseError(f"{origin}: unknown key(s) {', '.join(sorted(unknown))}; expected {', '.join(sorted(KEYS))}")
        mjd = raw.get("max_mjd")
        if mjd is not None and (isinstance(mjd, bool) or not isinstance(mjd, int)):
            raise ReleaseError(f"{origin}: max_mjd must be an integer MJD, got {mjd!r}")
        lists = {}
        for key in ("exclude_programs", "exclude_cartons", "omit_columns"):
            value = raw.get(key) or []
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ReleaseError(f"{origin}: {key} must be a list of names, got {value!r}")
            lists[key] = tuple(value)
        return cls(max_mjd=mjd, origin=origin, **lists)

    def as_dict(self) -> dict[str, Any]:
        return {
            "max_mjd": self.max_mjd,
            "exclude_programs": list(self.exclude_programs),
            "exclude_cartons": list(self.exclude_cartons),
            "omit_columns": list(self.omit_columns),
        }

    # -- checks against the schema ---------------------------------------------------------------
    def excluded_bits(self, schema: Schema) -> list[int]:
        """sdss5_target_flags bits of the excluded programs and cartons."""
        programs = {b.program for b in schema.targeting}
        cartons = {b.name for b in schema.targeting} | {b.label for b in schema.targeting}
        for name in self.exclude_programs:
            if name not in programs:
                raise ReleaseError(
                    f"{self.origin}: exclude_programs names unknown program {name!r} (see sdss5_targeting_bits.csv)"
                )
        for name in self.exclude_cartons:
            if name not in cartons:
                raise ReleaseError(f"{self.origin}: exclude_cartons names unknown carton {name!r} (see sdss5_targeting_bits.csv)")
        return sorted(
            {
                b.bit
                for b in schema.targeting
                if b.program in self.exclude_programs or b.name in self.exclude_cartons or b.label in self.exclude_cartons
            }
        )

    def omitted(self, schema: Schema, table: str) -> set[str]:
        """Columns of a table's view that the release leaves out (flag booleans of an omitted flag column too)."""
        tbl = schema.table(table)
        names = set(view_columns(tbl))
        out = {c.split(".", 1)[1] for c in self.omit_columns if c.startswith(f"{table}.")}
        out |= {c for c in self.omit_columns if "." not in c and c in names}
        fc = tbl.summary_column
        if fc is not None and fc.name in out:
            out |= {"flag_warn", "flag_bad", *fc.all_flag_names()}
        return out & names

    def validate(self, schema: Schema) -> None:
        self.excluded_bits(schema)
        for c in self.omit_columns:
            table, _, column = c.rpartition(".")
            if column in REQUIRED_COLUMNS:
                raise ReleaseError(f"{self.origin}: omit_columns cannot omit {c!r}: every release needs {column}")
            if table:
                if table not in schema.tables:
                    raise ReleaseError(f"{self.origin}: omit_columns names unknown table {table!r} in {c!r}")
                if column not in view_columns(schema.table(table)):
                    raise ReleaseError(f"{self.origin}: omit_columns names unknown column {c!r}")
            elif not any(column in view_columns(t) for t in schema.tables.values()):
                raise ReleaseError(f"{self.origin}: omit_columns names {column!r}, which no table has")


def release_view(table: str) -> str:
    return f"release_{table}"


def create_release_views(con: duckdb.DuckDBPyConnection, schema: Schema, tables: list[str], rf: ReleaseFilter) -> None:
    """``release_<table>`` views over a snapshot connection: the rows and columns a release may show."""
    rf.validate(schema)
    bits = rf.excluded_bits(schema)
    hit = " OR ".join(f"coalesce(sdss5_target_bit(sdss5_target_flags, {b}), false)" for b in bits) or "false"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _release_excluded_sources AS SELECT source_pk FROM source WHERE {hit}")
    cut = []
    if rf.max_mjd is not None:
        for t in schema.of_kind("spectrum"):
            col = "mjd" if "mjd" in t.column_names else "max_mjd" if "max_mjd" in t.column_names else None
            if col:
                cut.append(f"SELECT spectrum_pk FROM {t.name} WHERE {col} > {int(rf.max_mjd)}")
    cut_sql = " UNION ALL ".join(cut) or "SELECT NULL::BIGINT AS spectrum_pk WHERE false"
    con.execute(f"CREATE OR REPLACE TEMP TABLE _release_excluded_spectra AS {cut_sql}")
    for name in tables:
        tbl = schema.table(name)
        keep = [c for c in view_columns(tbl) if c not in rf.omitted(schema, name)]
        conds = []
        if "source_pk" in tbl.column_names:
            conds.append("source_pk IS NULL OR source_pk NOT IN (SELECT source_pk FROM _release_excluded_sources)")
        if "spectrum_pk" in tbl.column_names:
            conds.append("spectrum_pk NOT IN (SELECT spectrum_pk FROM _release_excluded_spectra)")
        where = " AND ".join(f"({c})" for c in conds) or "true"
        cols = ", ".join(f'"{c}"' for c in keep)
        con.execute(f"CREATE OR REPLACE TEMP VIEW {release_view(name)} AS SELECT {cols} FROM {name} WHERE {where}")
