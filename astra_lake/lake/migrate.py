"""Schema evolution: bring a lake from the data_schema it records to the package's (``astra-lake migrate``).

The plan compares the two schemas table by table. Applied without touching data: new tables (created
at their first write), new flag bits and changed ``flag_warn`` / ``flag_bad`` rules, descriptions, units,
ranges and storage settings of files to come. Applied by one commit per table that writes no data
file: new nullable columns without a ``fill`` (Delta's schema evolves in place, ``schema_mode="merge"``;
the files keep their columns). Applied by rewriting the table's current files once, in the same HATS
leaves, in one atomic commit: new columns with a declared ``fill`` (a file lacking the column reads as
null, and on read a fill could not be told from a stored null), renames (a column declaring
``renamed_from: <old name>``), type widening (int16 -> int32 -> int64, float32 -> float64, integers ->
float64, pixel arrays alike), reordered columns and dropping columns or tables that hold no values.
Refused, with one line per reason: anything that would lose or change data (a
dropped column or table with values, narrowing, another type change, a new required column without a
fill, nulls in a column becoming required, a changed key, kind, grid or HEALPix order).

Schema on read: a table that gained a column without a rewrite is marked (``<table>/evolved_columns.json``,
:attr:`astra_lake.lake.delta_store.DeltaStore.read_schema`), and every reader of its files (DuckDB views
and the writer's SQL, Polars scans, spectra lookups and batches, cone searches, LSDB, compaction, the
upsert's carried-over rows, releases through the views) presents the snapshot's declared storage schema
through :mod:`astra_lake.lake.conform` (``parquet_scan``, ``read_file``, ``on_read``): a column a file
lacks is null. Rows a later write carries into new files gain the column (as null, or the value written).
Old versions and tags keep their files (vacuum keeps tagged versions) and are read with the schema their
commits recorded (:meth:`astra_lake.lake.catalog.Catalog.at`), so without the new column. A renamed column
keeps its old name in Delta's own metadata (delta-rs has no column mapping) and a widened one its old
type there; the Parquet files, which every reader of the lake uses, carry the new name and type. A
migration that changes no stored column (flags, rules, descriptions, new tables) makes no commit: the
versions before it keep their rules, the head and every commit after it use the new ones.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from astra_lake.errors import SchemaMismatchError
from astra_lake.lake.catalog import Catalog, _now
from astra_lake.lake.conform import MANAGED, parquet_scan, storage_schema
from astra_lake.lake.delta_store import EVOLVED, PARTITION_COLUMNS, DataFile, delta_schema
from astra_lake.lake.files import discard, write_leaf_files
from astra_lake.lake.hats import write_sidecars
from astra_lake.lake.locks import atomic_write_text, exclusive
from astra_lake.lake.schemas import schema_hash, store_schema
from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.model import Column, FlagColumn, Table

_WIDER = {
    "int16": ("int32", "int64", "float32", "float64"),
    "int32": ("int64", "float64"),
    "float32": ("float64",),
}
_STRUCTURE = ("kind", "key", "natural_key", "healpix_order")


def widens(old: str, new: str) -> bool:
    """Whether every value of type ``old`` is exactly representable in ``new`` (pixel arrays: same width)."""
    if old.startswith("fixed<") and new.startswith("fixed<"):
        (a, n), (b, m) = (t.removeprefix("fixed<").rstrip(">").split(",") for t in (old, new))
        return n == m and b in _WIDER.get(a, ())
    return new in _WIDER.get(old, ())


@dataclass(frozen=True)
class Step:
    """One change of a plan: ``table``, what (``action``), and whether the table's files are rewritten."""

    table: str
    action: str
    detail: str
    rewrite: bool = False

    def __str__(self) -> str:
        return f"{self.table}: {self.action} {self.detail}".rstrip()


@dataclass
class Plan:
    """What a migration does (``steps``) or why it cannot (``refused``)."""

    lake: Path
    old_hash: str
    new_hash: str
    old_version: int
    new_version: int
    steps: list[Step] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    applied: bool = False

    @property
    def current(self) -> bool:
        """Nothing to do: the lake is at the package's schema."""
        return self.old_hash == self.new_hash

    def lines(self) -> list[str]:
        if self.current:
            return [f"{self.lake}: at data_schema revision {self.new_version} ({self.new_hash}); nothing to migrate"]
        head = f"{self.lake}: data_schema revision {self.old_version} ({self.old_hash}) -> {self.new_version} ({self.new_hash})"
        out = [head] + [f"  {s}" + (" [rewrites the table's files]" if s.rewrite else "") for s in self.steps]
        out += [f"  REFUSED {r}" for r in self.refused]
        if not self.steps and not self.refused:
            out.append("  descriptions only: no data change")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


class _Stats:
    """Row and value counts of the stored tables (read once, on demand)."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._files: dict[str, list[DataFile]] = {}

    def files(self, table: str) -> list[DataFile]:
        if table not in self._files:
            store = self.catalog.store(table)
            self._files[table] = store.files() if store.exists() else []
        return self._files[table]

    def rows(self, table: str) -> int:
        return sum(f.num_rows for f in self.files(table))

    def values(self, table: str, column: str) -> int:
        """Non-null values of a column (0 when the table is empty)."""
        files = self.files(table)
        if not files:
            return 0
        store = self.catalog.store(table)
        scan = parquet_scan(store.paths(files), schema=store.read_schema)
        row = self.catalog.duck().execute(f'SELECT count("{column}") FROM {scan}').fetchone()
        return int(row[0]) if row else 0


def _flag_changes(old: tuple[FlagColumn, ...], new: tuple[FlagColumn, ...]) -> list[str]:
    before = {fc.name: fc for fc in old}
    out = []
    for fc in new:
        was = before.get(fc.name)
        if was is None:
            out.append(f"{fc.name}: new flag column")
            continue
        if was == fc:
            continue
        bits_then = {f.bit: f.name for e in was.editions for f in e.flags}
        bits_now = {f.bit: f.name for e in fc.editions for f in e.flags}
        parts = []
        added = sorted(set(bits_now) - set(bits_then))
        if added:
            parts.append("new bits " + ", ".join(f"{b} ({bits_now[b]})" for b in added))
        gone = sorted(set(bits_then) - set(bits_now))
        if gone:
            parts.append("bits no longer named " + ", ".join(f"{b} ({bits_then[b]})" for b in gone))
        renamed = sorted(b for b in set(bits_now) & set(bits_then) if bits_now[b] != bits_then[b])
        if renamed:
            parts.append("renamed bits " + ", ".join(f"{b} ({bits_then[b]} -> {bits_now[b]})" for b in renamed))
        for which in ("flag_warn", "flag_bad"):
            if [getattr(e, which) for e in was.editions] != [getattr(e, which) for e in fc.editions]:
                parts.append(f"{which} rule changed")
        if [(e.since, e.until) for e in was.editions] != [(e.since, e.until) for e in fc.editions]:
            parts.append("editions changed")
        out.append(f"{fc.name}: " + ("; ".join(parts) or "descriptions"))
    return out


def _table_plan(old: Table, new: Table, stats: _Stats, plan: Plan) -> dict[str, str] | None:
    """Steps for a table in both schemas; the source column of each new column when files are rewritten."""
    name = new.name
    for attr in _STRUCTURE:
        if getattr(old, attr) != getattr(new, attr):
            plan.refused.append(
                f"{name}: {attr} changes from {getattr(old, attr)!r} to {getattr(new, attr)!r}; a migration cannot "
                "do that (export the table and write it again)"
            )
    rows = stats.rows(name)
    grids = [(g.kind, g.npix, g.crval, g.cdelt) if g else None for g in (old.grid, new.grid)]
    if grids[0] != grids[1] and rows:
        plan.refused.append(f"{name}: wavelength grid changes {grids[0]} -> {grids[1]}; a migration cannot resample spectra")
    before = {c.name: c for c in old.columns}
    now = {c.name for c in new.columns}
    sources: dict[str, str] = {}
    for c in new.columns:
        src = c.name if c.name in before else c.renamed_from if c.renamed_from in before and c.renamed_from not in now else ""
        if not src:
            _new_column(name, c, rows, plan)
            continue
        sources[c.name] = src
        was = before[src]
        if src != c.name:
            plan.steps.append(Step(name, "rename column", f"{src} -> {c.name}", rewrite=rows > 0))
        if was.type != c.type:
            if widens(was.type, c.type):
                plan.steps.append(Step(name, "widen column", f"{c.name}: {was.type} -> {c.type}", rewrite=rows > 0))
            else:
                plan.refused.append(
                    f"{name}.{c.name}: type {was.type} -> {c.type} is not a widening; it would lose or change data "
                    "(declare a new column instead)"
                )
        if was.nullable and not c.nullable and rows:
            nulls = rows - stats.values(name, src)
            if nulls:
                plan.refused.append(f"{name}.{c.name}: becomes required, but {nulls:,} stored rows are null")
    for c in old.columns:
        if c.name in sources.values():
            continue
        values = stats.values(name, c.name) if rows else 0
        if values:
            plan.refused.append(
                f"{name}.{c.name}: no longer declared, but {values:,} rows hold values; dropping it would lose data "
                "(keep it, e.g. with hidden: true, or rename it with renamed_from)"
            )
        else:
            plan.steps.append(Step(name, "drop column", f"{c.name} (no values)", rewrite=rows > 0))
    kept = [sources[c.name] for c in new.columns if c.name in sources]
    if rows and kept != [c.name for c in old.columns if c.name in set(kept)]:
        plan.steps.append(Step(name, "reorder columns", "(as declared)", rewrite=True))
    for change in _flag_changes(old.flag_columns, new.flag_columns):
        plan.steps.append(Step(name, "flags", change + " (no data change; older versions keep their rules)"))
    if (old.codec, old.row_group_rows) != (new.codec, new.row_group_rows):
        plan.steps.append(Step(name, "storage", "codec / row groups of files written from now on"))
    changed = any(s.table == name for s in plan.steps)
    if not changed and old != new:
        plan.steps.append(Step(name, "metadata", "descriptions, units or ranges (no data change)"))
    return sources


def _new_column(table: str, c: Column, rows: int, plan: Plan) -> None:
    if not c.nullable and c.fill is None and c.name not in MANAGED and rows:
        plan.refused.append(
            f"{table}.{c.name}: new required column without a fill value, and the table has {rows:,} rows "
            "(declare it nullable or give it a fill)"
        )
        return
    value = "null" if c.fill is None else repr(c.fill)
    evolve = c.nullable and c.fill is None  # files lacking it read as null: no file rewritten
    plan.steps.append(Step(table, "new column", f"{c.name} ({c.type}, {value} in stored rows)", rewrite=rows > 0 and not evolve))


def make_plan(lake: Catalog, package: Schema) -> tuple[Plan, dict[str, dict[str, str]]]:
    """The plan from the lake's schema (``lake.schema``) to ``package``, and per table the rewrite sources."""
    old = lake.schema
    plan = Plan(lake.root, schema_hash(old), schema_hash(package), old.version, package.version)
    if plan.current:
        return plan, {}
    if old.version > package.version:
        plan.refused.append(
            f"the lake is at data_schema revision {old.version}, newer than this astra-lake's {package.version}; "
            "upgrade astra-lake"
        )
        return plan, {}
    stats = _Stats(lake)
    sources: dict[str, dict[str, str]] = {}
    for name, table in package.tables.items():
        if name not in old.tables:
            plan.steps.append(Step(name, "new table", "(created by its first write)"))
        else:
            sources[name] = _table_plan(old.tables[name], table, stats, plan) or {}
    for name in old.tables:
        if name not in package.tables:
            rows = stats.rows(name)
            if rows:
                plan.refused.append(f"{name}: table no longer declared, but it holds {rows:,} rows; dropping it would lose data")
            else:
                plan.steps.append(Step(name, "drop table", "(no rows)"))
    return plan, sources


def _converted(part: pa.Table, table: Table, sources: dict[str, str]) -> pa.Table:
    """A file's rows in the new storage schema: renamed, widened, new columns null or their fill."""
    schema = storage_schema(table)
    cols = []
    for f in schema:
        src = f.name if f.name in part.column_names else sources.get(f.name, f.name)
        if src in part.column_names:
            cols.append(part.column(src).cast(f.type, safe=True))
        else:
            fill = table.column(f.name).fill
            cols.append(pa.array([fill] * part.num_rows, f.type) if fill is not None else pa.nulls(part.num_rows, f.type))
    return pa.Table.from_arrays(cols, schema=schema)


def _evolve_delta(catalog: Catalog, table: str) -> bool:
    """Add the table's new columns to Delta's own schema (a metadata commit: no data file is written)."""
    from deltalake import write_deltalake

    store = catalog.store(table)
    have = set(pa.schema(store.delta().schema().to_arrow()).names)
    target = delta_schema(store.table)
    if set(target.names) <= have:
        return False
    write_deltalake(str(store.dataset), target.empty_table(), mode="append", schema_mode="merge", partition_by=PARTITION_COLUMNS)
    return True


def _mark_evolved(catalog: Catalog, old: Table, table: str) -> None:
    """Record the columns ``table`` gains without a rewrite (its stored files lack them): from now on its
    readers conform every file to the declared schema (:attr:`DeltaStore.read_schema`). Never unmarked:
    versions written before keep files without them."""
    store = catalog.store(table)
    added = [f.name for f in storage_schema(store.table) if f.name not in storage_schema(old).names]
    if not added or not store.files():
        return
    path = store.root / EVOLVED
    before = json.loads(path.read_text()) if path.exists() else {"columns": []}
    columns = list(dict.fromkeys([*before["columns"], *added]))
    atomic_write_text(path, json.dumps({"columns": columns}, indent=1))


def _rewrite(catalog: Catalog, table: str, sources: dict[str, str]) -> None:
    """Rewrite the table's current files into the new storage schema, file by file; one commit."""
    store = catalog.store(table)
    old = store.files()
    _evolve_delta(catalog, table)
    added: list[DataFile] = []
    try:
        for f in old:
            added += write_leaf_files(store, _converted(pq.read_table(store.abspath(f)), store.table, sources))
    except BaseException:
        discard(store, added)
        raise
    rows = sum(f.num_rows for f in added)
    catalog.commit(table, added, old, "migrate", rows)


def migrate(root: Path, *, dry_run: bool = False, schema: Schema | None = None) -> Plan:
    """Plan, and unless ``dry_run`` apply, the migration of the lake at ``root`` to ``schema`` (default:
    the package's data_schema/). Refusals raise :class:`SchemaMismatchError` naming every reason."""
    package = schema or load_schema()
    current = Catalog.open(Path(root), package)  # the lake's own schema; a newer lake is refused here
    plan, sources = make_plan(current, package)
    if plan.refused:
        raise SchemaMismatchError(f"{root}: migration refused: " + "; ".join(plan.refused))
    if dry_run or plan.current:
        return plan
    new = Catalog(Path(root), package)
    with exclusive(new.meta / "write.lock"):
        current.repair_log()
        plan, sources = make_plan(current, package)  # again, under the lock
        if plan.refused:
            raise SchemaMismatchError(f"{root}: migration refused: " + "; ".join(plan.refused))
        new._committed = []
        for name in sorted({s.table for s in plan.steps if s.rewrite}):
            _rewrite(new, name, sources[name])
            write_sidecars(new.store(name))
        for name in new.existing_tables():  # tables not rewritten: Delta's schema only
            rewritten = any(s.table == name and s.rewrite for s in plan.steps)
            if name not in current.schema.tables or rewritten:
                continue
            _mark_evolved(new, current.schema.table(name), name)  # before the schema the readers see changes
            if _evolve_delta(new, name):
                new.record(name, new.store(name).latest_version(), "migrate", 0)
                write_sidecars(new.store(name))  # HATS _common_metadata: the declared schema
        _record(new, package, plan)
    plan.applied = True
    return plan


def _info(catalog: Catalog) -> dict[str, Any]:
    info: dict[str, Any] = json.loads((catalog.root / "lake.json").read_text())
    return info


def _record(catalog: Catalog, schema: Schema, plan: Plan) -> None:
    """lake.json: the schema the lake is at now, and the migrations so far."""
    info = _info(catalog)
    history = list(info.get("migrations", []))
    history.append({"from": plan.old_hash, "to": plan.new_hash, "lake_version": catalog.version, "time": _now()})
    info |= {"schema": store_schema(catalog.meta, schema), "schema_version": schema.version, "migrations": history}
    atomic_write_text(catalog.root / "lake.json", json.dumps(info, indent=1))
