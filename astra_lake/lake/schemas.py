"""The data_schema a lake was written with: canonical JSON of the validated declarations and its hash.

Every commit line of ``_meta/log.jsonl`` names the hash of the schema it was written with, and
``_meta/schemas/<hash>.json`` keeps those declarations (content-addressed, written once), so a version
of the lake is read with the schema of its own commits, whatever the installed package declares now.
The hash covers the compiled tables and grids (types, nullability, flags, rules, descriptions) and the
``schema_version`` revision; it is independent of file layout, comments and modification times.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

from astra_lake.errors import CorruptLakeError
from astra_lake.lake.locks import atomic_write_text
from astra_lake.schema.loader import Schema, schema_dir
from astra_lake.schema.model import Column, Edition, Flag, FlagColumn, Grid, Rule, Table

_HASHES: dict[int, tuple[Schema, str]] = {}  # id(schema) -> (schema, hash): schemas are immutable


def _plain(value: Any) -> Any:
    """Dataclasses as dicts of their public fields, tuples as lists (JSON-ready, deterministic)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value) if not f.name.startswith("_")}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def declarations(schema: Schema) -> dict[str, Any]:
    """The schema as JSON-ready data: revision, tables, grids."""
    return {
        "schema_version": schema.version,
        "tables": {name: _plain(t) for name, t in sorted(schema.tables.items())},
        "grids": {name: _plain(g) for name, g in sorted(schema.grids.items())},
    }


def _canonical(data: dict[str, Any]) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def schema_hash(schema: Schema) -> str:
    """16 hex digits of the SHA-256 of the canonical declarations."""
    hit = _HASHES.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    digest = hashlib.sha256(_canonical(declarations(schema)).encode()).hexdigest()[:16]
    _HASHES[id(schema)] = (schema, digest)
    return digest


def _rule(raw: dict[str, Any] | None) -> Rule | None:
    if raw is None:
        return None
    return Rule(
        kind=raw["kind"],
        any_mask=raw["any_mask"],
        all_masks=tuple(raw["all_masks"]),
        any_bit=raw["any_bit"],
        flags=tuple(tuple(c) for c in raw["flags"]),
    )


def _edition(raw: dict[str, Any]) -> Edition:
    flags = tuple(Flag(**{**f, "aliases": tuple(f["aliases"])}) for f in raw["flags"])
    rules = {k: _rule(raw[k]) for k in ("flag_warn", "flag_bad")}
    return Edition(flags=flags, since=raw["since"], until=raw["until"], source=raw["source"], **rules)


def _table(raw: dict[str, Any]) -> Table:
    flag_columns = tuple(
        FlagColumn(**{**fc, "editions": tuple(_edition(e) for e in fc["editions"])}) for fc in raw["flag_columns"]
    )
    simple = {k: v for k, v in raw.items() if k not in ("columns", "flag_columns", "grid")}
    for k in ("key", "natural_key", "pixel_columns"):
        simple[k] = tuple(simple[k])
    return Table(
        **simple,
        columns=tuple(Column(**c) for c in raw["columns"]),
        flag_columns=flag_columns,
        grid=Grid(**raw["grid"]) if raw["grid"] else None,
    )


def from_declarations(data: dict[str, Any], directory: Path | None = None) -> Schema:
    """The :class:`Schema` that :func:`declarations` wrote (products and targeting bits: the package's)."""
    from astra_lake.schema.loader import load_schema

    package = load_schema()
    return Schema(
        tables={name: _table(t) for name, t in data["tables"].items()},
        grids={name: Grid(**g) for name, g in data["grids"].items()},
        targeting=package.targeting,
        directory=directory or schema_dir(),
        version=int(data["schema_version"]),
    )


def schema_path(meta: Path, digest: str) -> Path:
    return meta / "schemas" / f"{digest}.json"


def store_schema(meta: Path, schema: Schema) -> str:
    """Keep the declarations in ``_meta/schemas/<hash>.json`` (once); returns the hash."""
    digest = schema_hash(schema)
    path = schema_path(meta, digest)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(declarations(schema), indent=1, sort_keys=True))
    return digest


def recorded_schema(meta: Path, digest: str) -> Schema:
    """The schema a lake recorded under ``digest``."""
    path = schema_path(meta, digest)
    try:
        data = json.loads(path.read_text())
        schema = from_declarations(data)
    except FileNotFoundError:
        raise CorruptLakeError(f"{path}: missing; the lake names data_schema {digest} but its declarations are gone") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise CorruptLakeError(f"{path}: not the declarations of a data_schema ({type(exc).__name__}: {exc})") from None
    return schema
