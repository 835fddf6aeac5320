"""The data_schema a lake was written with: canonical JSON of the validated declarations and its hash.

Every commit line of ``_meta/log.jsonl`` names the hash of the schema it was written with, and
``_meta/schemas/<hash>.json`` keeps those declarations (content-addressed, written once), so a version
of the lake is read with the schema of its own commits, whatever the installed package declares now.
The hash covers the compiled tables and grids (types, nullability, flags, rules, descriptions) and the
``schema_version`` revision; it is independent of file layout, comments and modification times.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import is_dataclass
from pathlib import Path
from typing import Any

from astra_lake.errors import CorruptLakeError
from astra_lake.lake.locks import atomic_write_text
from astra_lake.schema.loader import Schema, schema_dir
from astra_lake.schema.model import Column, Edition, Flag, FlagColumn, Grid, Rule, Table

_HASHES: dict[int, tuple[Schema, str]] = {}  # id(schema) -> (schema, hash): schemas are immutable


def _fields(value: Any) -> dict[str, Any]:
    """A model dataclass as the dict of its public fields (tuples become JSON lists)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    raise TypeError(f"{type(value).__name__} is not part of a schema")


def canonical(schema: Schema) -> str:
    """The schema's revision, tables and grids as canonical JSON (sorted keys, no spaces)."""
    data = {"schema_version": schema.version, "tables": schema.tables, "grids": schema.grids}
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=_fields)


def declarations(schema: Schema) -> dict[str, Any]:
    """The schema as JSON data: revision, tables, grids."""
    data: dict[str, Any] = json.loads(canonical(schema))
    return data


def schema_hash(schema: Schema) -> str:
    """16 hex digits of the SHA-256 of :func:`canonical`. The package's schema's hash is kept next to the
    loader's cache (keyed like it by the content of data_schema/): opening a lake does not re-encode it."""
    hit = _HASHES.get(id(schema))
    if hit is not None and hit[0] is schema:
        return hit[1]
    cached = _cache_file(schema)
    digest = ""
    if cached is not None:
        with contextlib.suppress(OSError):
            digest = cached.read_text().strip()
    if len(digest) != 16:
        digest = hashlib.sha256(canonical(schema).encode()).hexdigest()[:16]
        if cached is not None:
            with contextlib.suppress(OSError):
                cached.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_text(cached, digest)
    _HASHES[id(schema)] = (schema, digest)
    return digest


def _cache_file(schema: Schema) -> Path | None:
    """Where the hash of a schema loaded from its directory is cached (None for other schemas)."""
    from astra_lake.schema.loader import _fingerprint, cache_dir, load_schema

    try:
        if load_schema(schema.directory) is not schema:
            return None
        return cache_dir() / f"{_fingerprint(schema.directory)}.hash"
    except Exception:  # an unreadable or vanished directory: no cache
        return None


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
        roles=package.roles,  # the lake's own handling of its columns: the package's
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
        atomic_write_text(path, json.dumps(declarations(schema), indent=1, sort_keys=True) + "\n")
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
