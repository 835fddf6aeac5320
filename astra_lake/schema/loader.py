"""Read data_schema/ into typed declarations, validating it on the way (names, bits, references)."""

from __future__ import annotations

import csv
import functools
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from astra_lake.errors import SchemaError, UnknownTableError
from astra_lake.schema.model import (
    Column,
    Edition,
    Flag,
    FlagColumn,
    Grid,
    Rule,
    Table,
    signed_mask,
)
from astra_lake.schema.versions import version_to_int

_NUMERIC = {"int16", "int32", "int64", "float32", "float64"}
_TYPES = {"bool", "int16", "int32", "int64", "float32", "float64", "string", "binary", "timestamp", "list<float32>"}


def schema_dir() -> Path:
    """Where data_schema/ lives: inside the installed package, else next to it in a checkout."""
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


def _read_yaml(path: Path) -> Any:
    try:
        with open(path) as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise SchemaError(f"{path}: not valid YAML: {exc}") from exc


def _column(raw: dict[str, Any], where: str) -> Column:
    if raw.get("type") not in _TYPES and not str(raw.get("type", "")).startswith("fixed<"):
        raise SchemaError(f"{where}: column {raw.get('name')!r} has unknown type {raw.get('type')!r}")
    low, high = raw.get("minimum"), raw.get("maximum")
    if low is not None or high is not None:
        name = raw["name"]
        if raw["type"] not in _NUMERIC:
            raise SchemaError(f"{where}: column {name!r}: minimum/maximum need a numeric type, not {raw['type']}")
        if any(v is not None and (isinstance(v, bool) or not isinstance(v, int | float)) for v in (low, high)):
            raise SchemaError(f"{where}: column {name!r}: minimum/maximum must be numbers, got {low!r}/{high!r}")
        if low is not None and high is not None and low > high:
            raise SchemaError(f"{where}: column {name!r}: minimum {low} > maximum {high}")
    return Column(
        name=raw["name"],
        type=raw["type"],
        description=str(raw.get("description", "")).strip(),
        unit=str(raw.get("unit", "") or ""),
        nullable=bool(raw.get("nullable", True)),
        fill=raw.get("fill"),
        hidden=bool(raw.get("hidden", False)),
        minimum=low,
        maximum=high,
    )


def _flags(raw_flags: list[dict[str, Any]], where: str, params: dict[str, Any] | None = None) -> list[Flag]:
    params = params or {}
    out = []
    for raw in raw_flags:
        if raw.get("requires") and not params.get(raw["requires"]):
            continue
        bit = int(raw["bit"])
        if not 0 <= bit <= 63:
            raise SchemaError(f"{where}: flag {raw.get('name')!r} has bit {bit}, expected 0..63")
        name = str(raw["name"]).format(**params)
        out.append(
            Flag(
                bit=bit,
                name=name,
                description=str(raw.get("description") or "").strip(),
                warn=bool(raw.get("warn", False)),
                bad=bool(raw.get("bad", False)),
                aliases=tuple(raw.get("aliases", ())),
                note=str(raw.get("note", "")),
            )
        )
    return out


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
    if isinstance(raw, dict) and "all_of" in raw:
        return Rule(kind="all_of", all_masks=(mask_of(raw["all_of"]),), flags=(tuple(raw["all_of"]),))
    if isinstance(raw, dict) and "any_of" in raw:
        singles = [c[0] for c in raw["any_of"] if len(c) == 1]
        multis = [c for c in raw["any_of"] if len(c) > 1]
        return Rule(
            kind="any_of",
            any_mask=mask_of(singles) if singles else 0,
            all_masks=tuple(mask_of(c) for c in multis),
            flags=tuple(tuple(c) for c in raw["any_of"]),
        )
    raise SchemaError(f"{where}: {marker} must be marked, any_bit, {{all_of: [...]}} or {{any_of: [[...]]}}")


def _mark_from_rule(flags: list[Flag], rule: Rule | None, attr: str) -> list[Flag]:
    """Set each flag's warn/bad marker to whether the flag takes part in the rule (the truth table)."""
    if rule is None or rule.kind == "marked":
        return flags
    names = {n for clause in rule.flags for n in clause}
    out = []
    for f in flags:
        part = rule.any_bit or f.name in names
        out.append(Flag(**{**f.__dict__, attr: part}))
    return out


def _edition(raw: dict[str, Any], flags: list[Flag], where: str) -> Edition:
    names: dict[str, int] = {}
    for f in flags:
        for n in (f.name, *f.aliases):
            if n in names:
                raise SchemaError(f"{where}: flag name {n!r} used twice (bits {names[n]} and {f.bit})")
            names[n] = f.bit
    bits = [f.bit for f in flags]
    if len(bits) != len(set(bits)):
        raise SchemaError(f"{where}: two flags share a bit; declare the second name as an alias")
    warn = _rule(raw.get("flag_warn"), flags, "flag_warn", where)
    bad = _rule(raw.get("flag_bad"), flags, "flag_bad", where)
    flags = _mark_from_rule(_mark_from_rule(flags, warn, "warn"), bad, "bad")
    return Edition(
        flags=tuple(sorted(flags, key=lambda f: f.bit)),
        since=version_to_int(str(raw["since"])) if raw.get("since") else None,
        until=version_to_int(str(raw["until"])) if raw.get("until") else None,
        flag_warn=warn,
        flag_bad=bad,
        source=str(raw.get("source", "")),
    )


def _flag_column(raw: dict[str, Any], sets: dict[str, Any], where: str) -> FlagColumn:
    where = f"{where}.{raw['name']}"
    raw_editions = raw.get("editions") or [raw]
    editions = []
    for raw_ed in raw_editions:
        if "flag_set" in raw:
            if raw["flag_set"] not in sets:
                raise SchemaError(f"{where}: unknown flag_set {raw['flag_set']!r}")
            flags = _flags(sets[raw["flag_set"]]["flags"], where, raw.get("params"))
            flags += _flags(raw.get("extra_flags", []), where)
            if "max_bit" in raw:
                flags = [f for f in flags if f.bit <= raw["max_bit"]]
            marks = {m: set(raw.get(m, [])) for m in ("warn", "bad")}
            flags = [Flag(**{**f.__dict__, "warn": f.name in marks["warn"], "bad": f.name in marks["bad"]}) for f in flags]
        else:
            flags = _flags(raw_ed.get("flags", []), where)
        editions.append(_edition(raw_ed, flags, where))
    if len(editions) > 1:
        _check_editions_partition(editions, where)
    return FlagColumn(
        name=raw["name"],
        editions=tuple(editions),
        summary=bool(raw.get("summary", False)),
        note=str(raw.get("note", "")),
        signed32_source=bool(raw.get("signed32_source", False)),
    )


def _check_editions_partition(editions: list[Edition], where: str) -> None:
    ordered = sorted(editions, key=lambda e: e.since or -1)
    if ordered[0].since is not None or ordered[-1].until is not None:
        raise SchemaError(f"{where}: editions must start unbounded (no since) and end unbounded (no until)")
    for a, b in itertools.pairwise(ordered):
        if a.until != b.since:
            raise SchemaError(f"{where}: edition ranges must touch (until {a.until} != since {b.since})")


def _table(raw: dict[str, Any], common: dict[str, Any], sets: dict[str, Any], grids: dict[str, Grid]) -> Table:
    name, kind = raw["name"], raw["kind"]
    where = f"data_schema/tables/{name}.yaml"
    if kind not in common["kinds"]:
        raise SchemaError(f"{where}: unknown kind {kind!r}")
    kind_decl = common["kinds"][kind]
    columns = [_column(c, where) for g in kind_decl["groups"] for c in common["column_groups"][g]]
    grid = None
    pixel_columns: list[str] = []
    if "pixels" in raw:
        grid = grids[raw["pixels"]["grid"]]
        if grid.kind == "per_row":
            columns.append(Column("wavelength", f"fixed<float64,{grid.npix}>", "Vacuum wavelength of each pixel", "Angstrom"))
            pixel_columns.append("wavelength")
        for arr in common["pixel_sets"][raw["pixels"]["arrays"]]:
            columns.append(_column({**arr, "type": f"fixed<{arr['type']},{grid.npix}>"}, where))
            pixel_columns.append(arr["name"])
    columns += [_column(c, where) for c in raw.get("columns", [])]
    seen: set[str] = set()
    for c in columns:
        if c.name in seen:
            raise SchemaError(f"{where}: column {c.name!r} declared twice")
        seen.add(c.name)
    flag_columns = tuple(_flag_column(fc, sets, where) for fc in raw.get("flag_columns", []))
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
    natural_key = tuple(raw.get("natural_key", ()))
    unknown_key = [k for k in natural_key if k not in seen]
    if unknown_key:
        raise SchemaError(f"{where}: natural_key names unknown columns {unknown_key}")
    storage = common["storage"][kind]
    return Table(
        name=name,
        kind=kind,
        description=str(raw.get("description", "")).strip(),
        columns=tuple(columns),
        flag_columns=flag_columns,
        key=tuple(kind_decl["key"]),
        natural_key=natural_key,
        healpix_order=int(storage["healpix_order"]),
        row_group_rows=int(storage["row_group_rows"]),
        codec=_codec(storage, kind),
        grid=grid,
        pixel_columns=tuple(pixel_columns),
        notes=str(raw.get("notes", "")),
    )


def _codec(storage: dict[str, Any], kind: str) -> str:
    codec = str(storage.get("codec", "zstd"))
    if codec not in ("zstd", "lz4", "snappy", "none"):
        raise SchemaError(f"common.yaml storage.{kind}.codec: expected zstd, lz4, snappy or none, got {codec!r}")
    return codec


def _targeting(path: Path) -> tuple[TargetingBit, ...]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return tuple(TargetingBit(int(r["bit"]), r["label"], int(r["carton_pk"]), r["program"], r["mapper"], r["name"]) for r in rows)


def load_schema(directory: Path | None = None) -> Schema:
    """Read and validate data_schema/ (cached per directory)."""
    return _load(str(directory or schema_dir()))


@functools.lru_cache(maxsize=4)
def _load(directory: str) -> Schema:
    root = Path(directory)
    common = _read_yaml(root / "common.yaml")
    sets = _read_yaml(root / "flag_sets.yaml")
    grids = {n: Grid(name=n, **g) for n, g in common["grids"].items()}
    tables = {}
    for path in sorted((root / "tables").glob("*.yaml")):
        raw = _read_yaml(path)
        if raw.get("name") != path.stem:
            raise SchemaError(f"{path}: name {raw.get('name')!r} must equal the file name {path.stem!r}")
        tables[path.stem] = _table(raw, common, sets, grids)
    return Schema(tables=tables, grids=grids, targeting=_targeting(root / "sdss5_targeting_bits.csv"), directory=root)
