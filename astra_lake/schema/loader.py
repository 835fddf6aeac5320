"""Read data_schema/ into typed declarations, validating it on the way (keys, names, bits, references).

Every file is parsed into the pydantic models of :mod:`astra_lake.schema.declarations` (unknown keys are
errors), then compiled into :mod:`astra_lake.schema.model`. The result is cached in memory and, keyed by a
hash of data_schema/ and of this code, as a pickle in the user's cache folder: a process that finds it
there neither parses YAML nor imports pydantic (the CLI starts in a fraction of a second).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import itertools
import logging
import os
import pickle
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from astra_lake.errors import SchemaError, UnknownTableError
from astra_lake.schema.model import Column, Edition, Flag, FlagColumn, Grid, Roles, Rule, Table, signed_mask
from astra_lake.schema.versions import version_to_int

if TYPE_CHECKING:
    from pydantic import BaseModel

    from astra_lake.schema.declarations import ColumnDecl, CommonDecl, EditionDecl, FlagColumnDecl, FlagDecl, TableDecl

log = logging.getLogger(__name__)
_CACHED_FILES = 16  # schema caches kept (one per data_schema/ content seen: checkouts, edits)


def schema_dir() -> Path:
    """Where data_schema/ lives: ``$ASTRA_LAKE_SCHEMA_DIR`` when set (another revision of it, e.g. to test a
    migration), else inside the installed package, else next to it in a checkout."""
    override = os.environ.get("ASTRA_LAKE_SCHEMA_DIR")
    if override:
        if not (Path(override) / "common.yaml").exists():
            raise SchemaError(f"ASTRA_LAKE_SCHEMA_DIR={override}: no common.yaml there; point it at a data_schema/ directory")
        return Path(override)
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_data" / "data_schema", here.parent / "data_schema"):
        if (candidate / "common.yaml").exists():
            return candidate
    raise SchemaError(f"data_schema/ not found next to {here}; reinstall astra-lake")


@dataclass(frozen=True)
class TargetingBit:
    """One SDSS-V targeting bit of sdss5_target_flags and the carton it stands for."""

    bit: int
    label: str
    carton_pk: int
    program: str
    mapper: str
    name: str


@dataclass(frozen=True)
class Schema:
    """Every table, flag set and grid of the lake."""

    tables: dict[str, Table]
    grids: dict[str, Grid]
    targeting: tuple[TargetingBit, ...]
    directory: Path
    roles: Roles
    version: int = 1  # schema_version of common.yaml: the revision a lake records and migrates between

    def table(self, name: str) -> Table:
        try:
            return self.tables[name]
        except KeyError:
            raise UnknownTableError(f"unknown table {name!r}; valid tables: {', '.join(sorted(self.tables))}") from None

    def of_kind(self, kind: str) -> list[Table]:
        return [t for t in self.tables.values() if t.kind == kind]

    @property
    def pipelines(self) -> list[Table]:
        return self.of_kind("pipeline")

    @property
    def flagged_tables(self) -> list[Table]:
        return [t for t in self.tables.values() if t.flag_columns]


# -- reading and validating files -------------------------------------------------------------------
def _read_yaml(path: Path) -> Any:
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~4x faster when available
    try:
        with open(path) as fh:
            return yaml.load(fh, Loader=loader)
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {' '.join(str(exc).split())}") from None


def _validated(model: type[BaseModel], path: Path) -> Any:
    """A file parsed into its declaration model; any error names the file and the key path."""
    from pydantic import ValidationError

    raw = _read_yaml(path)
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        errors = sorted(exc.errors(), key=lambda e: e["type"] != "extra_forbidden")  # typos first: the likely cause
        problems = [_problem(model, raw, err) for err in errors[:3]]
        more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
        raise SchemaError(f"{path}: " + "; ".join(problems) + more) from None


def _problem(model: type[BaseModel], raw: Any, err: Any) -> str:
    """One validation error as ``key.path[name]: what is wrong`` (list items named by their ``name``)."""
    parts: list[str] = []
    node = raw
    for part in err["loc"]:
        if isinstance(part, int) and isinstance(node, list) and part < len(node):
            node = node[part]
            label = node.get("name") if isinstance(node, dict) else None
            parts.append(f"[{label if isinstance(label, str) else part}]")
        elif isinstance(part, str) and isinstance(node, dict) and part in node:
            node = node[part]
            parts.append(f".{part}")
        else:
            parts.append(f".{part}")
            node = None
    where = "".join(parts).lstrip(".") or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model, [p for p in err["loc"][:-1]])
        return f"{where}: unknown key (a typo?)" + (f"; allowed here: {', '.join(allowed)}" if allowed else "")
    if err["type"] == "missing":
        return f"{where}: required key missing"
    return f"{where}: {err['msg']} (got {err.get('input')!r})"


def _allowed_keys(model: Any, loc: list[Any]) -> list[str]:
    """The field names of the model found at ``loc`` below ``model`` (following lists and dicts)."""
    import typing

    from pydantic import BaseModel

    def models(annotation: Any) -> list[Any]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models(arg)]

    current = [model]
    for part in loc:
        nxt = []
        for m in current:
            if isinstance(part, str) and part in m.model_fields:
                nxt += models(m.model_fields[part].annotation)
            elif "root" in m.model_fields:  # RootModel: a dict of models
                nxt += models(m.model_fields["root"].annotation)
        if not nxt and isinstance(part, int | str):  # an index into a list, or a key of a dict: same models
            nxt = current
        current = nxt
    return sorted({name for m in current for name in m.model_fields})


# -- compiling declarations into the model -------------------------------------------------------------
def _column(decl: ColumnDecl, type_: str | None = None) -> Column:
    return Column(
        name=decl.name,
        type=type_ or decl.type,
        description=decl.description.strip(),
        unit=decl.unit or "",
        nullable=decl.nullable,
        fill=decl.fill,
        hidden=decl.hidden,
        minimum=decl.minimum,
        maximum=decl.maximum,
        fits_card=decl.fits_card,
        renamed_from=decl.renamed_from or "",
    )


def _flags(decls: list[FlagDecl], params: dict[str, Any] | None = None) -> list[Flag]:
    params = params or {}
    return [
        Flag(
            bit=d.bit,
            name=d.name.format(**params),
            description=(d.description or "").strip(),
            warn=d.warn,
            bad=d.bad,
            aliases=tuple(d.aliases),
            note=d.note,
        )
        for d in decls
        if not d.requires or params.get(d.requires)
    ]


def _rule(raw: Any, flags: list[Flag], marker: str, where: str) -> Rule | None:
    if raw is None:
        return None
    by_name = {n: f for f in flags for n in (f.name, *f.aliases)}

    def mask_of(names: list[str]) -> int:
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SchemaError(f"{where}: {marker} names unknown flags {missing}")
        m = 0
        for n in names:
            m |= signed_mask(by_name[n].bit)
        return m

    if raw == "any_bit":
        return Rule(kind="any_bit", any_bit=True)
    if raw == "marked":
        marked = [f for f in flags if getattr(f, marker.removeprefix("flag_"))]
        if not marked:
            raise SchemaError(f"{where}: {marker}: marked, but no flag is marked {marker.removeprefix('flag_')}")
        return Rule(kind="marked", any_mask=mask_of([f.name for f in marked]), flags=tuple((f.name,) for f in marked))
    if "all_of" in raw:
        return Rule(kind="all_of", all_masks=(mask_of(raw["all_of"]),), flags=(tuple(raw["all_of"]),))
    singles = [c[0] for c in raw["any_of"] if len(c) == 1]
    multis = [c for c in raw["any_of"] if len(c) > 1]
    return Rule(
        kind="any_of",
        any_mask=mask_of(singles) if singles else 0,
        all_masks=tuple(mask_of(c) for c in multis),
        flags=tuple(tuple(c) for c in raw["any_of"]),
    )


def _mark_from_rule(flags: list[Flag], rule: Rule | None, attr: str) -> list[Flag]:
    """Set each flag's warn/bad marker to whether the flag takes part in the rule (the truth table)."""
    if rule is None or rule.kind == "marked":
        return flags
    names = {n for clause in rule.flags for n in clause}
    marks: dict[str, Any] = {f.name: {attr: rule.any_bit or f.name in names} for f in flags}
    return [replace(f, **marks[f.name]) for f in flags]


def _edition(decl: EditionDecl, flags: list[Flag], where: str) -> Edition:
    names: dict[str, int] = {}
    for f in flags:
        for n in (f.name, *f.aliases):
            if n in names:
                raise SchemaError(f"{where}: flag name {n!r} used twice (bits {names[n]} and {f.bit})")
            names[n] = f.bit
    bits = [f.bit for f in flags]
    if len(bits) != len(set(bits)):
        raise SchemaError(f"{where}: two flags share a bit; declare the second name as an alias")
    warn = _rule(decl.flag_warn, flags, "flag_warn", where)
    bad = _rule(decl.flag_bad, flags, "flag_bad", where)
    flags = _mark_from_rule(_mark_from_rule(flags, warn, "warn"), bad, "bad")
    return Edition(
        flags=tuple(sorted(flags, key=lambda f: f.bit)),
        since=version_to_int(decl.since) if decl.since else None,
        until=version_to_int(decl.until) if decl.until else None,
        flag_warn=warn,
        flag_bad=bad,
        source=decl.source,
    )


def _flag_column(decl: FlagColumnDecl, sets: dict[str, Any], where: str) -> FlagColumn:
    where = f"{where}.{decl.name}"
    editions = []
    for ed in decl.edition_decls():
        if decl.flag_set is not None:
            if decl.flag_set not in sets:
                raise SchemaError(f"{where}: unknown flag_set {decl.flag_set!r}; flag sets: {', '.join(sorted(sets))}")
            flags = _flags(sets[decl.flag_set].flags, decl.params) + _flags(decl.extra_flags)
            if decl.max_bit is not None:
                flags = [f for f in flags if f.bit <= decl.max_bit]
            flags = [replace(f, warn=f.name in decl.warn, bad=f.name in decl.bad) for f in flags]
        else:
            flags = _flags(ed.flags)
        editions.append(_edition(ed, flags, where))
    if len(editions) > 1:
        _check_editions_partition(editions, where)
    return FlagColumn(
        name=decl.name,
        editions=tuple(editions),
        summary=decl.summary,
        note=decl.note,
        signed32_source=decl.signed32_source,
    )


def _check_editions_partition(editions: list[Edition], where: str) -> None:
    ordered = sorted(editions, key=lambda e: e.since or -1)
    if ordered[0].since is not None or ordered[-1].until is not None:
        raise SchemaError(f"{where}: editions must start unbounded (no since) and end unbounded (no until)")
    for a, b in itertools.pairwise(ordered):
        if a.until != b.since:
            raise SchemaError(f"{where}: edition ranges must touch (until {a.until} != since {b.since})")


def _table(decl: TableDecl, common: CommonDecl, sets: dict[str, Any], grids: dict[str, Grid]) -> Table:
    where = f"data_schema/tables/{decl.name}.yaml"
    kind = common.kinds.get(decl.kind)
    storage = common.storage.get(decl.kind)
    if kind is None or storage is None:
        raise SchemaError(f"data_schema/common.yaml: kind {decl.kind!r} needs an entry under both kinds and storage")
    unknown_groups = [g for g in kind.groups if g not in common.column_groups]
    if unknown_groups:
        raise SchemaError(f"data_schema/common.yaml: kinds.{decl.kind} names unknown column groups {unknown_groups}")
    columns = [_column(c) for g in kind.groups for c in common.column_groups[g]]
    grid = None
    pixel_columns: list[str] = []
    if decl.pixels is not None:
        if decl.pixels.grid not in grids:
            raise SchemaError(f"{where}: pixels.grid {decl.pixels.grid!r} is not a grid; grids: {', '.join(grids)}")
        if decl.pixels.arrays not in common.pixel_sets:
            raise SchemaError(f"{where}: pixels.arrays {decl.pixels.arrays!r} is not one of {', '.join(common.pixel_sets)}")
        grid = grids[decl.pixels.grid]
        if grid.kind == "per_row":
            columns.append(Column("wavelength", f"fixed<float64,{grid.npix}>", "Vacuum wavelength of each pixel", "Angstrom"))
            pixel_columns.append("wavelength")
        for arr in common.pixel_sets[decl.pixels.arrays]:
            columns.append(_column(arr, f"fixed<{arr.type},{grid.npix}>"))
            pixel_columns.append(arr.name)
    columns += [_column(c) for c in decl.columns]
    seen: set[str] = set()
    for c in columns:
        if c.name in seen:
            raise SchemaError(f"{where}: column {c.name!r} declared twice")
        seen.add(c.name)
    flag_columns = tuple(_flag_column(fc, sets, where) for fc in decl.flag_columns)
    names_seen: dict[str, str] = {}
    for fc in flag_columns:
        if fc.name not in seen:
            raise SchemaError(f"{where}: flag column {fc.name!r} is not a declared column")
        if next(c for c in columns if c.name == fc.name).type != "int64":
            raise SchemaError(f"{where}: flag column {fc.name!r} must be int64")
        for n in {n for e in fc.editions for f in e.flags for n in (f.name, *f.aliases)}:
            if n in names_seen:
                raise SchemaError(f"{where}: flag {n!r} is bound to both {names_seen[n]} and {fc.name}")
            names_seen[n] = fc.name
    if sum(fc.summary for fc in flag_columns) > 1:
        raise SchemaError(f"{where}: at most one flag column can be the summary column")
    unknown_key = [k for k in decl.natural_key if k not in seen]
    if unknown_key:
        raise SchemaError(f"{where}: natural_key names unknown columns {unknown_key}")
    return Table(
        name=decl.name,
        kind=decl.kind,
        description=decl.description.strip(),
        columns=tuple(columns),
        flag_columns=flag_columns,
        key=tuple(kind.key),
        natural_key=tuple(decl.natural_key),
        healpix_order=storage.healpix_order,
        row_group_rows=storage.row_group_rows,
        codec=storage.codec,
        grid=grid,
        pixel_columns=tuple(pixel_columns),
        notes=decl.notes,
    )


def _targeting(path: Path) -> tuple[TargetingBit, ...]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return tuple(TargetingBit(int(r["bit"]), r["label"], int(r["carton_pk"]), r["program"], r["mapper"], r["name"]) for r in rows)


def parse_schema(root: Path) -> Schema:
    """Read and validate the files of a data_schema/ directory (no cache)."""
    from astra_lake.schema.declarations import CommonDecl, FlagSetsDecl, TableDecl

    common: CommonDecl = _validated(CommonDecl, root / "common.yaml")
    sets = _validated(FlagSetsDecl, root / "flag_sets.yaml").root
    grids = {n: Grid(name=n, **g.model_dump()) for n, g in common.grids.items()}
    tables = {}
    for path in sorted((root / "tables").glob("*.yaml")):
        decl: TableDecl = _validated(TableDecl, path)
        if decl.name != path.stem:
            raise SchemaError(f"{path}: name {decl.name!r} must equal the file name {path.stem!r}")
        tables[path.stem] = _table(decl, common, sets, grids)
    targeting = _targeting(root / "sdss5_targeting_bits.csv")
    return Schema(
        tables=tables,
        grids=grids,
        targeting=targeting,
        directory=root,
        roles=_roles(common, tables),
        version=common.schema_version,
    )


def _roles(common: CommonDecl, tables: dict[str, Table]) -> Roles:
    """``roles`` of common.yaml; every column it names must be declared (in a column group or a table)."""
    r = common.roles
    declared = {c.name for cols in common.column_groups.values() for c in cols} | {
        c for t in tables.values() for c in t.column_names
    }
    named = {"minted": list(r.minted.values()), "managed": r.managed, "timestamps": r.timestamps}
    named |= {"kept_on_replace": r.kept_on_replace, "identity": r.identity}
    for role, columns in named.items():
        unknown = [c for c in columns if c not in declared]
        if unknown:
            raise SchemaError(f"data_schema/common.yaml: roles.{role} names {unknown}, not a declared column")
    return Roles(
        minted={str(kind): column for kind, column in r.minted.items()},
        managed=frozenset(r.managed),
        timestamps=tuple(r.timestamps),
        kept_on_replace=tuple(r.kept_on_replace),
        identity=tuple(r.identity),
    )


# -- the cache ---------------------------------------------------------------------------------------
def _fingerprint(root: Path) -> str:
    """A hash of the files of data_schema/ that :func:`parse_schema` reads (not products/: 2 MB of
    datamodel extracts it never opens), of the code that shapes the result, of the directory and of the
    Python version: a cached schema is used only while all are the same."""
    h = hashlib.sha256(f"{root.resolve()}\0{sys.version_info[:2]}\0".encode())
    here = Path(__file__).parent
    code = [here / "loader.py", here / "model.py", here / "declarations.py", here / "versions.py"]
    read = [root / "common.yaml", root / "flag_sets.yaml", root / "sdss5_targeting_bits.csv"]
    files = [p for p in read if p.exists()] + sorted((root / "tables").glob("*.yaml"))  # what parse_schema reads
    for path in [*code, *files]:
        h.update(f"\0{path.relative_to(root) if path.is_relative_to(root) else path.name}\0".encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:32]


def cache_dir() -> Path:
    """Where validated schemas are cached (``$XDG_CACHE_HOME/astra-lake/schema`` on Linux)."""
    import platformdirs

    return platformdirs.user_cache_path("astra-lake", appauthor=False) / "schema"


def _from_cache(path: Path) -> Schema | None:
    try:
        with open(path, "rb") as fh:
            schema = pickle.load(fh)
    except FileNotFoundError:
        return None
    except Exception as exc:  # a damaged or outdated entry is rebuilt
        log.debug("schema cache %s unreadable (%s); rebuilding it", path, exc)
        return None
    return schema if isinstance(schema, Schema) else None


def _to_cache(path: Path, schema: Schema) -> None:
    """Write atomically; keep the newest entries; never fail the caller (read-only homes, full disks)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_bytes(pickle.dumps(schema, protocol=pickle.HIGHEST_PROTOCOL))
        os.replace(tmp, path)
        old = sorted(path.parent.glob("*.pickle"), key=lambda p: p.stat().st_mtime, reverse=True)[_CACHED_FILES:]
        for stale in old:
            stale.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("schema not cached at %s (%s)", path, exc)


def load_schema(directory: Path | None = None) -> Schema:
    """Read and validate data_schema/ (cached in memory per directory, and on disk by content)."""
    return _load(str(directory or schema_dir()))


@functools.lru_cache(maxsize=4)
def _load(directory: str) -> Schema:
    root = Path(directory)
    cached = cache_dir() / f"{_fingerprint(root)}.pickle"
    schema = _from_cache(cached)
    if schema is None:
        schema = parse_schema(root)
        _to_cache(cached, schema)
    return schema
