"""Release products declared in data_schema/products/: which FITS files a release holds, HDU by HDU.

Three kinds of file live there:

* ``families.yaml`` (hand-written): per product family the HDUs, the lake tables each HDU joins
  (driver, joins, ``precedence`` for name clashes), renames and the per-source header cards;
* ``datamodel/<product>.json`` (extracted from the official SDSS datamodel YAMLs by
  ``python -m astra_lake.schema.products extract DIR``): HDU names, header cards and columns (name,
  type, unit, description) of the newest release of each published product;
* ``generated/<product>.yaml`` (``python -m astra_lake.schema.products generate``): the resolved
  column list of every product: FITS name, FITS type code and the lake column (SQL) it comes from.
  A test checks it equals a fresh generation.

Units and descriptions are not copied into the generated files: :func:`load_products` takes them from
the datamodel extract (the published TUNIT / TCOMM text) where it gives them, else from data_schema/
(tables and flags) through each column's source.
"""

from __future__ import annotations

import functools
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from astra_lake.errors import SchemaError
from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.views import view_columns

# FITS binary-table type codes of data_schema types (upstream: FloatField -> E, IntegerField -> J,
# BigInteger/Bit/ForeignKey -> K, Boolean -> L, Text -> A<max len>, DateTime -> A26).
_TFORM = {
    "float32": "E",
    "float64": "D",
    "int64": "K",
    "int32": "J",
    "int16": "I",
    "bool": "L",
    "string": "A",
    "timestamp": "A",
    "binary": "L",  # sdss5_target_flags: one logical per targeting bit
    "list<float32>": "E",
}
_DATAMODEL_TFORM = {"float32": "E", "float64": "D", "int64": "K", "int32": "J", "int16": "I", "bool": "L", "char": "A"}
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: the generated files are ~1 MB
STRUCTURAL_CARDS = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "TFIELDS"}
COLUMN_CARD_PREFIXES = ("TTYPE", "TFORM", "TUNIT", "TCOMM", "TDIM", "TNULL", "TDISP")


def products_dir(schema: Schema | None = None) -> Path:
    return (schema or load_schema()).directory / "products"


# -- the datamodel extract -----------------------------------------------------------------------
def datamodel_tform(dm_type: str) -> str:
    """FITS type code of a datamodel column type (``float32``, ``char[18]``, ``float32[8575]``, ``bool[57]``)."""
    base = dm_type.split("[", 1)[0]
    if base not in _DATAMODEL_TFORM:
        raise SchemaError(f"datamodel type {dm_type!r} has no FITS type code; expected one of {sorted(_DATAMODEL_TFORM)}")
    return _DATAMODEL_TFORM[base]


def is_column_card(key: str) -> bool:
    return key.startswith(COLUMN_CARD_PREFIXES) and key[5:].isdigit()


def extract_datamodel(path: Path, release: str | None = None) -> dict[str, Any]:
    """One release (default: the newest) of an official datamodel YAML, reduced to what a release must
    reproduce."""
    raw = yaml.load(path.read_text(), Loader=_LOADER)
    releases = {k: v for k, v in raw["releases"].items() if isinstance(v, dict) and "hdus" in v}
    if release is not None and release not in releases:
        raise SchemaError(f"{path}: no release {release!r} with HDUs; it has {', '.join(releases)}")
    name = release or next((r for r in ("DR20", "DR19", "IPL3", "WORK") if r in releases), None)
    if name is None:
        raise SchemaError(f"{path}: no release with HDUs")
    hdus = []
    for h in releases[name]["hdus"].values():
        cards = [
            [c["key"], c["value"], c.get("comment", "")]
            for c in h.get("header") or []
            if c["key"] not in STRUCTURAL_CARDS and not is_column_card(c["key"])
        ]
        columns = [
            [c["name"], c["type"], c.get("unit") or "", (c.get("description") or "").strip()]
            for c in (h.get("columns") or {}).values()
        ]
        hdus.append({"name": h.get("name") or "", "description": h.get("description") or "", "cards": cards, "columns": columns})
    return {"product": raw["general"]["name"], "release": name, "hdus": hdus}


def dump_datamodel(extract: dict[str, Any]) -> str:
    """Stable JSON, one card or column per line (reviewable diffs)."""
    lines = [
        "{",
        f' "product": {json.dumps(extract["product"])},',
        f' "release": {json.dumps(extract["release"])},',
        ' "hdus": [',
    ]
    for i, h in enumerate(extract["hdus"]):
        lines.append(f'  {{"name": {json.dumps(h["name"])}, "description": {json.dumps(h["description"])},')
        cards = [f"   {json.dumps(c, ensure_ascii=False, default=str)}" for c in h["cards"]]
        lines.append('   "cards": [' + ("\n" + ",\n".join(cards) + "\n   " if cards else "") + "],")
        cols = [f"   {json.dumps(c, ensure_ascii=False)}" for c in h["columns"]]
        lines.append(
            '   "columns": ['
            + ("\n" + ",\n".join(cols) + "\n   " if cols else "")
            + "]}"
            + ("," if i < len(extract["hdus"]) - 1 else "")
        )
    lines += [" ]", "}"]
    return "\n".join(lines) + "\n"


def read_datamodel(product: str, schema: Schema | None = None) -> dict[str, Any] | None:
    path = products_dir(schema) / "datamodel" / f"{product}.json"
    return json.loads(path.read_text()) if path.exists() else None


# -- declarations -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ProductColumn:
    """One FITS column: its name, FITS type code, the SQL that gives it (None: written as the null
    fill, the lake does not store it), and where its unit/description come from."""

    name: str
    tform: str
    expr: str | None
    unit: str = ""
    description: str = ""
    source: str = ""  # "table.column" the value is read from ("" for fills and computed columns)


@dataclass(frozen=True)
class Join:
    table: str
    alias: str
    cond: str
    how: str = "inner"
    newest_per: str = ""


@dataclass(frozen=True)
class ProductHDU:
    """A binary-table HDU: the rows of ``driver`` joined to ``joins``, filtered, ordered, as ``columns``."""

    extname: str
    instrument: str
    observatory: str
    driver: Join
    joins: tuple[Join, ...]
    where: str
    order: str
    columns: tuple[ProductColumn, ...]
    cards: tuple[tuple[str, Any, str], ...]
    grid: str = ""

    @property
    def tables(self) -> dict[str, str]:
        """alias -> lake table."""
        return {j.alias: j.table for j in (self.driver, *self.joins)}


@dataclass(frozen=True)
class Product:
    name: str
    family: str
    path: str
    per: str  # "" (one file), "pipeline" (one per v_astra major.minor) or "source" (one per source)
    pipeline: str
    primary_cards: tuple[tuple[str, Any, str], ...]
    hdus: tuple[ProductHDU, ...]
    datamodel_release: str = ""
    notes: tuple[str, ...] = field(default=())

    @property
    def tables(self) -> set[str]:
        return {t for h in self.hdus for t in h.tables.values()}


def _families(schema: Schema) -> dict[str, Any]:
    return _read_families(str(products_dir(schema) / "families.yaml"))


@functools.lru_cache(maxsize=4)
def _read_families(where: str) -> dict[str, Any]:
    path = Path(where)
    try:
        raw: dict[str, Any] = yaml.load(path.read_text(), Loader=_LOADER)
    except (OSError, yaml.YAMLError) as exc:
        raise SchemaError(f"{path}: cannot read product families: {exc}") from exc
    return raw


def column_meta(schema: Schema, table: str, column: str) -> tuple[str, str, str]:
    """(data_schema type, unit, description) of a view column, flag booleans included."""
    tbl = schema.table(table)
    if column in tbl.column_names:
        c = tbl.column(column)
        return c.type, c.unit, c.description
    fc = tbl.summary_column
    if fc is not None:
        if column in ("flag_warn", "flag_bad"):
            rule = {e.source or "": getattr(e, column) for e in fc.editions if getattr(e, column) is not None}
            kinds = sorted({r.kind for r in rule.values()})
            what = "warning" if column == "flag_warn" else "bad (unreliable)"
            return (
                "bool",
                "",
                f"True when the {fc.name} value marks this result as {what} ({', '.join(kinds)} rule of {tbl.name})",
            )
        for edition in fc.editions:
            flag = edition.flag(column)
            if flag is not None:
                text = flag.description or flag.name.replace("_", " ")
                return "bool", "", f"{text} (bit {flag.bit} of {fc.name})"
    raise SchemaError(f"{table}.{column}: not a column of the {table} view")


class _Resolver:
    """Maps FITS column names onto the lake columns of one HDU's tables."""

    def __init__(self, schema: Schema, tables: dict[str, str], precedence: list[str], renames: dict[str, str]) -> None:
        self.schema, self.tables, self.renames = schema, tables, renames
        self.order = [a for a in precedence if a in tables] + [a for a in tables if a not in precedence]
        self.views = {a: view_columns(schema.table(t)) for a, t in tables.items()}

    def find(self, name: str) -> tuple[str, str] | None:
        """(alias, column) holding ``name`` (FITS names are case-blind), first table in precedence order,
        renames after."""
        for alias in self.order:
            lower = {c.lower(): c for c in self.views[alias]}
            if name.lower() in lower:
                return alias, lower[name.lower()]
        target = self.renames.get(name.lower())
        if target:
            alias, column = target.split(".", 1)
            if alias in self.tables and column in self.views[alias]:
                return alias, column
        return None

    def all_columns(self) -> list[tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        for alias in self.order:
            for c in self.views[alias]:
                out.setdefault(c, (alias, c))
        return list(out.values())


def _sql_for(schema: Schema, table: str, alias: str, column: str, tform: str) -> str:
    typ = column_meta(schema, table, column)[0]
    ref = f"{alias}.{column}"
    if column == "v_astra" and typ == "int32" and tform == "A":
        return f"v_astra_to_str({ref})"
    return ref


def _fmt(text: str, **values: str) -> str:
    for k, v in values.items():
        text = text.replace("{" + k + "}", v)
    return text


def _hdu_decl(
    schema: Schema,
    fam: dict[str, Any],
    raw: dict[str, Any],
    dm_hdu: dict[str, Any] | None,
    *,
    pipeline: str,
    name: str,
) -> dict[str, Any]:
    model = raw.get("model", "")
    sub = {"pipeline": pipeline, "model": model}
    joins = [{**j, "table": _fmt(j["table"], **sub)} for j in raw.get("joins", [])]
    driver = {**raw["driver"], "table": _fmt(raw["driver"]["table"], **sub)}
    tables = {driver["alias"]: driver["table"], **{j["alias"]: j["table"] for j in joins}}
    resolver = _Resolver(schema, tables, raw.get("precedence", []), fam["renames"])
    columns: list[list[Any]] = []
    if dm_hdu is not None:
        for col_name, dm_type, _unit, _desc in dm_hdu["columns"]:
            tform = datamodel_tform(dm_type)
            if col_name == "wavelength" and raw.get("grid"):
                columns.append([col_name, tform, f"grid:{raw['grid']}"])
                continue
            hit = resolver.find(col_name)
            if hit is None:
                columns.append([col_name, tform, None])
            else:
                alias, column = hit
                columns.append([col_name, tform, _sql_for(schema, tables[alias], alias, column, tform)])
        cards = [list(c) for c in dm_hdu["cards"]]
    else:
        for alias, column in resolver.all_columns():
            table = tables[alias]
            if column in ("v_astra_major_minor", "_healpix_29") or column in schema.table(table).pixel_columns:
                continue  # summary files carry no pixel arrays (upstream excludes them too)
            typ = column_meta(schema, table, column)[0]
            tform = "E" if typ.startswith("fixed<float32") else "J" if typ.startswith("fixed<int32") else _TFORM.get(typ, "")
            if not tform:
                raise SchemaError(f"{table}.{column}: type {typ} has no FITS type code")
            columns.append([column, tform, _sql_for(schema, table, alias, column, tform)])
        cards = _default_hdu_cards(raw, name)
    return {
        "extname": raw.get("extname", ""),
        "instrument": raw.get("instrument", ""),
        "observatory": raw.get("observatory", ""),
        "grid": raw.get("grid", ""),
        "driver": driver,
        "joins": joins,
        "where": _fmt(raw.get("where", ""), **sub),
        "order": raw["order"],
        "cards": cards,
        "columns": columns,
    }


def _default_hdu_cards(raw: dict[str, Any], name: str) -> list[list[Any]]:
    cards: list[list[Any]] = [["", "", ""], ["", "Metadata", ""], ["", "", ""]]
    if raw.get("extname"):
        cards.append(["EXTNAME", raw["extname"], "Extension name"])
    if raw.get("observatory"):
        cards.append(["OBSRVTRY", raw["observatory"], "Observatory"])
    if raw.get("instrument"):
        cards.append(["INSTRMNT", raw["instrument"], "Instrument"])
    if "{pipeline}" in str(raw["driver"]["table"]):
        cards.append(["PIPELINE", name, "Pipeline name"])
    cards += [
        ["V_ASTRA", "0.0.0", "Astra version"],
        ["CREATED", "", "File creation time (UTC %y-%m-%d %H:%M:%S)"],
        ["", "", ""],
        ["", "DATA INTEGRITY", ""],
        ["", "", ""],
        ["CHECKSUM", "", ""],
        ["DATASUM", "", ""],
    ]
    return cards


def _default_primary_cards(family: str, fam: dict[str, Any], pipeline_name: str) -> list[list[Any]]:
    cards: list[list[Any]] = [["", "", ""], ["", "Metadata", ""], ["", "", ""]]
    if fam.get("per") == "pipeline":
        cards.append(["PIPELINE", pipeline_name, "Pipeline name"])
    cards += [["V_ASTRA", "0.0.0", "Astra version"], ["CREATED", "", "File creation time (UTC %y-%m-%d %H:%M:%S)"]]
    cards += [["", "", ""], ["", "HDU Descriptions", ""], ["", "", ""], ["COMMENT", "HDU 0: Summary information only", ""]]
    for i, h in enumerate(fam["hdus"], start=1):
        what = f"{h.get('instrument', '')} spectra".strip() if h.get("instrument") else "Sources"
        cards.append(["COMMENT", f"HDU {i}: {what}", ""])
    return cards


def product_names(schema: Schema | None = None) -> dict[str, tuple[str, str]]:
    """Every product: name -> (family, pipeline table or "")."""
    schema = schema or load_schema()
    fams = _families(schema)
    out: dict[str, tuple[str, str]] = {}
    for family, fam in fams["families"].items():
        if fam.get("per") == "pipeline":
            for table, pname in fams["pipelines"].items():
                if table not in schema.tables:
                    raise SchemaError(f"data_schema/products/families.yaml: pipeline {table!r} is not a table")
                out[f"{family}{pname}"] = (family, table)
        else:
            out[family] = (family, "")
    return out


def generate_products(schema: Schema | None = None) -> dict[str, str]:
    """file name (under data_schema/products/generated/) -> YAML text, for every product."""
    schema = schema or load_schema()
    fams = _families(schema)
    out = {}
    for name, (family, pipeline) in sorted(product_names(schema).items()):
        fam = fams["families"][family]
        dm = read_datamodel(name, schema)
        pname = fams["pipelines"].get(pipeline, "")
        if dm is not None and len(dm["hdus"]) != len(fam["hdus"]) + 1:
            raise SchemaError(f"{name}: the datamodel has {len(dm['hdus'])} HDUs, families.yaml declares {len(fam['hdus']) + 1}")
        hdus = [
            _hdu_decl(schema, fams, raw, dm["hdus"][i + 1] if dm else None, pipeline=pipeline, name=pname)
            for i, raw in enumerate(fam["hdus"])
        ]
        decl = {
            "name": name,
            "family": family,
            "per": fam.get("per", ""),
            "pipeline": pipeline,
            "path": _fmt(fam["path"], name=pname),
            "datamodel": dm["release"] if dm else "",
            "primary_cards": dm["hdus"][0]["cards"] if dm else _default_primary_cards(family, fam, pname),
            "hdus": hdus,
        }
        out[f"{name}.yaml"] = _dump_product(decl)
    return out


def _flow(values: list[Any]) -> str:
    """A YAML flow sequence of scalars that YAML reads back with the same types (``6e-06`` would be a
    string to YAML 1.1; ``6.0e-06`` is a float)."""

    def scalar(v: Any) -> str:
        if isinstance(v, float) and not isinstance(v, bool):
            text = repr(v)
            mantissa, _, exponent = text.partition("e")
            return text if "." in mantissa or not exponent else f"{mantissa}.0e{exponent}"
        return json.dumps(v, ensure_ascii=False, default=str)

    return "[" + ", ".join(scalar(v) for v in values) + "]"


def _dump_product(decl: dict[str, Any]) -> str:
    """YAML with one column per line (flow style inside, block style around)."""
    head = {k: v for k, v in decl.items() if k not in ("primary_cards", "hdus")}
    text = "# Generated by `python -m astra_lake.schema.products generate`; do not edit.\n"
    text += yaml.safe_dump(head, sort_keys=False, allow_unicode=True, width=200)
    text += "primary_cards:\n" + "".join(f"- {_flow(c)}\n" for c in decl["primary_cards"])
    text += "hdus:\n"
    for h in decl["hdus"]:
        meta = {k: v for k, v in h.items() if k not in ("cards", "columns")}
        block = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=200, default_flow_style=None)
        text += "- " + block.replace("\n", "\n  ").rstrip() + "\n"
        text += "  cards:\n" + "".join(f"  - {_flow(c)}\n" for c in h["cards"])
        text += "  columns:\n" + "".join(f"  - {json.dumps(c, ensure_ascii=False)}\n" for c in h["columns"])
    return text


def generated_dir(schema: Schema | None = None) -> Path:
    return products_dir(schema) / "generated"


def stale_products(schema: Schema | None = None) -> list[str]:
    """Generated product files that differ from a fresh generation (or are missing / extra)."""
    schema = schema or load_schema()
    fresh = generate_products(schema)
    folder = generated_dir(schema)
    have = {p.name for p in folder.glob("*.yaml")} if folder.exists() else set()
    stale = [n for n, text in fresh.items() if not (folder / n).exists() or (folder / n).read_text() != text]
    return sorted(stale + sorted(have - set(fresh)))


def write_products(schema: Schema | None = None) -> list[str]:
    schema = schema or load_schema()
    folder = generated_dir(schema)
    folder.mkdir(parents=True, exist_ok=True)
    fresh = generate_products(schema)
    changed = []
    for n, text in fresh.items():
        if not (folder / n).exists() or (folder / n).read_text() != text:
            (folder / n).write_text(text)
            changed.append(n)
    for extra in {p.name for p in folder.glob("*.yaml")} - set(fresh):
        (folder / extra).unlink()
        changed.append(extra)
    return changed


# -- loading ------------------------------------------------------------------------------------
def _column(schema: Schema, raw: list[Any], tables: dict[str, str], dm_cols: dict[str, list[str]], where: str) -> ProductColumn:
    name, tform, expr = raw
    if expr is None:
        dm = dm_cols.get(name)
        if dm is None:
            raise SchemaError(f"{where}: column {name!r} has no source and no datamodel entry")
        return ProductColumn(name, tform, None, dm[2], f"{dm[3]} (not stored in the lake; written as its null fill)".strip())
    if expr.startswith("grid:"):
        grid = schema.grids[expr.split(":", 1)[1]]
        dm = dm_cols.get(name, ["", "", "", ""])
        return ProductColumn(
            name, tform, expr, dm[2] or "Angstrom", dm[3] or f"Vacuum wavelength of each pixel ({grid.description})"
        )
    ref = expr.removeprefix("v_astra_to_str(").rstrip(")")
    alias, column = ref.split(".", 1)
    if alias not in tables:
        raise SchemaError(f"{where}: column {name!r} reads alias {alias!r}, which is not one of {sorted(tables)}")
    _typ, unit, description = column_meta(schema, tables[alias], column)
    dm = dm_cols.get(name)
    if dm is not None:  # the published spelling wins where the datamodel gives one
        unit, description = dm[2] or unit, dm[3] or description
    elif column != name:
        description = f"{description} ({tables[alias]}.{column})"
    return ProductColumn(name, tform, expr, unit, description, f"{tables[alias]}.{column}")


def _join(raw: dict[str, Any]) -> Join:
    return Join(raw["table"], raw["alias"], raw.get("cond", ""), raw.get("how", "inner"), raw.get("newest_per", ""))


@functools.lru_cache(maxsize=4)
def _load(directory: str) -> dict[str, Product]:
    schema = load_schema(Path(directory))
    folder = generated_dir(schema)
    out = {}
    for path in sorted(folder.glob("*.yaml")):
        raw = yaml.load(path.read_text(), Loader=_LOADER)
        dm = read_datamodel(raw["name"], schema)
        hdus = []
        for i, h in enumerate(raw["hdus"], start=1):
            where = f"{path.name} HDU {i}"
            tables = {h["driver"]["alias"]: h["driver"]["table"], **{j["alias"]: j["table"] for j in h["joins"]}}
            dm_cols = {c[0]: c for c in dm["hdus"][i]["columns"]} if dm else {}
            hdus.append(
                ProductHDU(
                    extname=h["extname"],
                    instrument=h["instrument"],
                    observatory=h["observatory"],
                    grid=h["grid"],
                    driver=_join(h["driver"]),
                    joins=tuple(_join(j) for j in h["joins"]),
                    where=h["where"],
                    order=h["order"],
                    columns=tuple(_column(schema, c, tables, dm_cols, where) for c in h["columns"]),
                    cards=tuple(tuple(c) for c in h["cards"]),  # type: ignore[misc]
                )
            )
        out[raw["name"]] = Product(
            name=raw["name"],
            family=raw["family"],
            path=raw["path"],
            per=raw["per"],
            pipeline=raw["pipeline"],
            primary_cards=tuple(tuple(c) for c in raw["primary_cards"]),  # type: ignore[misc]
            hdus=tuple(hdus),
            datamodel_release=raw["datamodel"],
        )
    return out


def load_products(schema: Schema | None = None) -> dict[str, Product]:
    """Every release product, with units and descriptions resolved from data_schema/ (cached)."""
    return _load(str((schema or load_schema()).directory))


def source_cards(schema: Schema | None = None) -> dict[str, str]:
    """Primary-header keyword -> source column for per-source files (keywords not listed: upper-case name)."""
    return dict(_families(schema or load_schema())["source_cards"])


def _main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "extract":
        out = products_dir() / "datamodel"
        out.mkdir(parents=True, exist_ok=True)
        wanted = set(product_names())
        for path in sorted(Path(argv[1]).glob("*.yaml")):
            if path.stem in wanted:
                (out / f"{path.stem}.json").write_text(dump_datamodel(extract_datamodel(path)))
        return 0
    if argv == ["generate"]:
        print("\n".join(write_products()) or "generated products are current")
        return 0
    if argv == ["check"]:
        stale = stale_products()
        print("stale: " + ", ".join(stale) if stale else "generated products are current")
        return 1 if stale else 0
    print("usage: python -m astra_lake.schema.products extract DATAMODEL_DIR | generate | check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
