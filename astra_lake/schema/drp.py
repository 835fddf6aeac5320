"""Reduction-pipeline summary files (spAll, allStar, allVisit, mwmTargets) as declared in
``data_schema/products/drp/``: how each is recognised and which lake column each FITS column fills.

``drp.yaml`` names, per file kind, the lake tables a row fills, the columns that find a stored row and
the few FITS names that differ from the lake's; the FITS columns themselves come from the official
datamodel extracts next to it (or from a release product's generated declaration). Every FITS column
whose (renamed) name is a column of the table fills it, so no column map is kept in Python.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from astra_lake.errors import SchemaError
from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.model import Table
from astra_lake.schema.products import dump_datamodel, extract_datamodel, products_dir

# Lake columns no file fills: identities, timestamps and what the writer derives.
NEVER = frozenset(
    {"_healpix_29", "source_pk", "spectrum_pk", "task_pk", "created", "modified", "source_key", "v_astra_major_minor"}
)
KEYS = ("files",)
FILE_KEYS = {"datamodel", "product", "detect", "source", "spectrum"}
TARGET_KEYS = {"table", "match", "renames", "ignore", "defaults", "constants", "key"}


@dataclass(frozen=True)
class Target:
    """One lake table a file's rows fill: ``columns`` are (FITS column, lake column) pairs, lower case;
    ``constants`` (lake column, value) hold for every row of the file kind (e.g. DR17's apred); ``key``
    (prefix, FITS columns) makes a source's ``source_key`` as ``<prefix>:<value>-<value>...``."""

    table: str
    match: tuple[str, ...]
    columns: tuple[tuple[str, str], ...]
    defaults: tuple[tuple[str, Any], ...] = ()
    constants: tuple[tuple[str, Any], ...] = ()
    key: tuple[str, tuple[str, ...]] | None = None

    @property
    def lake_columns(self) -> list[str]:
        return [lake for _, lake in self.columns]


@dataclass(frozen=True)
class DrpLayout:
    """How one kind of DRP file is recognised (``detect_all`` / ``detect_none`` columns of HDU 1) and read."""

    name: str
    fits_columns: tuple[str, ...]
    detect_all: tuple[str, ...]
    detect_none: tuple[str, ...]
    source: Target
    spectrum: Target | None

    def matches(self, columns: set[str]) -> bool:
        return set(self.detect_all) <= columns and not set(self.detect_none) & columns


def drp_dir(schema: Schema | None = None) -> Path:
    return products_dir(schema) / "drp"


def load_drp(schema: Schema | None = None) -> dict[str, DrpLayout]:
    """Every declared DRP file kind, resolved and checked (cached)."""
    return _load(str((schema or load_schema()).directory))


@functools.lru_cache(maxsize=4)
def _load(directory: str) -> dict[str, DrpLayout]:
    schema = load_schema(Path(directory))
    path = drp_dir(schema) / "drp.yaml"
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise SchemaError(f"{path}: cannot read: {exc}") from exc
    _known(path.name, raw, set(KEYS))
    return {name: _layout(schema, f"{path.name}: files.{name}", name, decl) for name, decl in raw["files"].items()}


def _known(where: str, raw: Any, allowed: set[str]) -> None:
    if not isinstance(raw, dict):
        raise SchemaError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise SchemaError(f"{where}: unknown key {unknown[0]!r}; allowed here: {', '.join(sorted(allowed))}")


def fits_columns(schema: Schema, decl: dict[str, Any], where: str) -> tuple[str, ...]:
    """HDU 1 column names (lower case) of a declared file kind."""
    if "datamodel" in decl:
        extract = drp_dir(schema) / f"{decl['datamodel']}.json"
        if not extract.exists():
            raise SchemaError(f"{where}: no datamodel extract {extract.name} next to drp.yaml")
        return tuple(c[0].lower() for c in json.loads(extract.read_text())["hdus"][1]["columns"])
    product = products_dir(schema) / "generated" / f"{decl.get('product')}.yaml"
    if not product.exists():
        raise SchemaError(f"{where}: give `datamodel` or `product` (a generated release product); {product.name} is not one")
    raw = yaml.safe_load(product.read_text())
    return tuple(c[0].lower() for c in raw["hdus"][0]["columns"])


def _layout(schema: Schema, where: str, name: str, decl: dict[str, Any]) -> DrpLayout:
    _known(where, decl, FILE_KEYS)
    cols = fits_columns(schema, decl, where)
    detect = decl.get("detect") or {}
    _known(f"{where}.detect", detect, {"all", "none"})
    absent = [c for c in detect.get("all", []) if c not in cols]
    if absent:
        raise SchemaError(f"{where}.detect: {absent[0]!r} is not a column of the file")
    source = _target(schema, f"{where}.source", {"table": "source", **decl["source"]}, cols)
    if not source.match:
        raise SchemaError(f"{where}.source.match: name the identifiers (or key) that find a stored source")
    spectrum = _target(schema, f"{where}.spectrum", decl["spectrum"], cols) if "spectrum" in decl else None
    if spectrum is not None and schema.table(spectrum.table).kind != "spectrum":
        raise SchemaError(f"{where}.spectrum: {spectrum.table} is not a spectrum table")
    return DrpLayout(name, cols, tuple(detect.get("all", [])), tuple(detect.get("none", [])), source, spectrum)


def _target(schema: Schema, where: str, decl: dict[str, Any], cols: tuple[str, ...]) -> Target:
    _known(where, decl, TARGET_KEYS)
    if decl["table"] not in schema.tables:
        raise SchemaError(f"{where}: table {decl['table']!r} is not declared in data_schema/tables/")
    tbl = schema.table(decl["table"])
    # a FITS column fills one lake column, or several (a list: e.g. a plate that is also the field)
    renames: dict[str, list[str]] = {k.lower(): v if isinstance(v, list) else [v] for k, v in (decl.get("renames") or {}).items()}
    ignore = {c.lower() for c in decl.get("ignore") or []}
    key = _key(where, decl.get("key"), cols, tbl)
    for fits_name in [*renames, *ignore, *(key[1] if key else ())]:
        if fits_name not in cols:
            raise SchemaError(f"{where}: {fits_name!r} is not a column of the file")
    constants = dict(decl.get("constants") or {})
    renamed = [lake for lakes in renames.values() for lake in lakes]
    for lake in [*renamed, *decl.get("match", []), *(decl.get("defaults") or {}), *constants]:
        if lake not in tbl.column_names:
            raise SchemaError(f"{where}: {lake!r} is not a column of {tbl.name}")
    never = NEVER | set(tbl.pixel_columns) | ({"sdss_id"} if tbl.kind == "spectrum" else set())
    pairs: dict[str, str] = {}
    for c in cols:
        for lake in renames.get(c, [c]):
            if c in ignore or lake in never or lake in constants or lake not in tbl.column_names:
                continue
            if lake in pairs:
                raise SchemaError(f"{where}: {pairs[lake]!r} and {c!r} both fill {tbl.name}.{lake}; rename or ignore one")
            pairs[lake] = c
    made = {"source_key"} if key else set()
    missing = [m for m in decl.get("match", []) if m not in pairs and m not in constants and m not in made]
    if missing:
        raise SchemaError(f"{where}: match column {missing[0]!r} is filled by no column of the file")
    defaults = tuple(sorted((decl.get("defaults") or {}).items()))
    columns = tuple((f, lake) for lake, f in pairs.items())
    return Target(tbl.name, tuple(decl.get("match", [])), columns, defaults, tuple(sorted(constants.items())), key)


def _key(where: str, decl: Any, cols: tuple[str, ...], tbl: Table) -> tuple[str, tuple[str, ...]] | None:
    if decl is None:
        return None
    _known(f"{where}.key", decl, {"prefix", "columns"})
    if tbl.kind != "source" or not decl.get("prefix") or not decl.get("columns"):
        raise SchemaError(f"{where}.key: a source's key is declared as {{prefix: ..., columns: [FITS columns]}}")
    return str(decl["prefix"]), tuple(c.lower() for c in decl["columns"])


def extract_name(name: str) -> tuple[str, str | None]:
    """(official product, release) of an extract name: ``allStar`` is the newest release of allStar.yaml,
    ``allStar_dr17`` its DR17 release."""
    product, _, release = name.partition("_")
    return product, release.upper() or None


def extracts(official: Path, schema: Schema | None = None) -> dict[str, str]:
    """Every extract drp.yaml names (``datamodel:``), freshly made from the official YAMLs in ``official``."""
    path = drp_dir(schema) / "drp.yaml"
    names = [d["datamodel"] for d in (yaml.safe_load(path.read_text()) or {}).get("files", {}).values() if "datamodel" in d]
    out = {}
    for name in names:
        product, release = extract_name(name)
        out[f"{name}.json"] = dump_datamodel(extract_datamodel(official / f"{product}.yaml", release))
    return out


def stale_extracts(official: Path, schema: Schema | None = None) -> list[str]:
    """Extracts that differ from (or are missing beside) a fresh extraction of the official YAMLs in ``official``."""
    return _stale(drp_dir(schema), extracts(official, schema))


def _stale(folder: Path, fresh: dict[str, str]) -> list[str]:
    on_disk = {p.name for p in folder.glob("*.json")}
    return sorted(
        n for n in on_disk | set(fresh) if n not in fresh or not (folder / n).exists() or (folder / n).read_text() != fresh[n]
    )


def write_extracts(official: Path, schema: Schema | None = None) -> list[str]:
    """Bring the extracts in line with drp.yaml and the official YAMLs; the names changed."""
    folder = drp_dir(schema)
    fresh = extracts(official, schema)
    stale = _stale(folder, fresh)
    for name in stale:
        if name in fresh:
            (folder / name).write_text(fresh[name])
        else:
            (folder / name).unlink()
    return stale


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 3 or sys.argv[1] != "extract":
        print("usage: python -m astra_lake.schema.drp extract DATAMODEL_DIR", file=sys.stderr)
        raise SystemExit(2)
    print("\n".join(write_extracts(Path(sys.argv[2]))) or "extracts are current")
