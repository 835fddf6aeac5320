"""What a reader returns: rows per lake table, linked to their source (and spectrum) by natural keys."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from astra_lake.errors import IngestError
from astra_lake.lake.conform import storage_schema
from astra_lake.schema.loader import load_schema

SOURCE_REF = "_source_key"  # on spectrum rows: the source_key of their source
SPECTRUM_REF = "_spectrum_ref"  # on result rows: "<spectrum table>" whose natural-key columns follow as _sk_<col>


@dataclass
class Extracted:
    """Rows one file gives, per table (``source`` first), before identities are resolved, with the
    HDU and row within it that each row came from (row None: the whole HDU or its header)."""

    path: str
    format: str
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    origins: dict[str, list[tuple[int, int | None]]] = field(default_factory=dict)
    arrays: dict[str, pa.Table] = field(default_factory=dict)

    def add(self, table: str, row: dict[str, Any], hdu: int = 0, hdu_row: int | None = None) -> None:
        self.tables.setdefault(table, []).append(row)
        self.origins.setdefault(table, []).append((hdu, hdu_row))

    def freeze(self) -> Extracted:
        """Convert every table's rows to Arrow (in the reader's process; the dicts are dropped)."""
        for table, rows in self.tables.items():
            try:
                self.arrays[table] = rows_to_arrow(table, rows, self.path)
            except IngestError as exc:
                hdu, row = self.origin(table, exc.row)
                raise IngestError(str(exc), hdu=hdu, row=row, column=exc.column) from None
        self.tables = {}
        return self

    def arrow(self, table: str) -> pa.Table:
        if table in self.arrays:
            return self.arrays[table]
        return rows_to_arrow(table, self.tables.get(table, []), self.path)

    def origin(self, table: str, row: int | None) -> tuple[int | None, int | None]:
        """(HDU, row within it) of a table's row."""
        if row is None or row >= len(self.origins.get(table, [])):
            return None, None
        return self.origins[table][row]

    @property
    def counts(self) -> dict[str, int]:
        return {t: len(r) for t, r in self.tables.items()} | {t: a.num_rows for t, a in self.arrays.items()}


def rows_to_arrow(table: str, rows: list[dict[str, Any]], path: str = "") -> pa.Table:
    """Row dicts -> Arrow in the table's storage types; keys starting with ``_`` (refs) are kept."""
    schema = storage_schema(load_schema().table(table))
    names = [f.name for f in schema if any(f.name in r for r in rows)]
    refs = sorted({k for r in rows for k in r if k.startswith("_") and k != "_healpix_29"})
    cols: dict[str, pa.Array] = {}
    for name in names:
        typ = schema.field(name).type
        values = [r.get(name) for r in rows]
        try:
            cols[name] = _column(typ, values)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError) as exc:
            row = next((i for i, v in enumerate(values) if not _converts(typ, v)), None)
            at = f" row {row}" if row is not None else ""
            raise IngestError(f"{path}: {table}.{name}{at}: cannot store value as {typ}: {exc}", row=row, column=name) from None
    for ref in refs:
        cols[ref] = pa.array([_scalar(r.get(ref)) for r in rows])
    return pa.table(cols) if cols else pa.table({})


def _column(typ: pa.DataType, values: list[Any]) -> pa.Array:
    if pa.types.is_list(typ):
        return pa.array([None if v is None else np.asarray(v, dtype=typ.value_type.to_pandas_dtype()) for v in values], typ)
    if pa.types.is_timestamp(typ):
        return pa.array([parse_timestamp(v) for v in values], typ)
    if pa.types.is_binary(typ):
        return pa.array([None if v is None else bytes(v) for v in values], typ)
    return pa.array([_scalar(v) for v in values], typ)


def _converts(typ: pa.DataType, value: Any) -> bool:
    try:
        _column(typ, [value])
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return False
    return True


def _scalar(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode(errors="replace").strip()
    if isinstance(v, str):
        return v.strip()
    return v


def parse_timestamp(v: Any) -> dt.datetime | None:
    """FITS dates arrive as ISO strings (or empty); unparsable ones become null."""
    if v is None or isinstance(v, dt.datetime):
        return v
    text = _scalar(v)
    try:
        t = dt.datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def finite_or_none(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def sigma_to_ivar(sigma: np.ndarray) -> np.ndarray:
    """1/sigma^2, with 0 wherever sigma is not a positive finite number (no NaN leaks into ivar)."""
    s = np.asarray(sigma, dtype=np.float64)
    ok = np.isfinite(s) & (s > 0)
    out = np.zeros(s.shape, dtype=np.float32)
    out[ok] = (1.0 / s[ok] ** 2).astype(np.float32)
    return out


def clean_flux(flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 flux; non-finite flux pixels become 0 with ivar 0."""
    f = np.asarray(flux, dtype=np.float32).copy()
    iv = np.asarray(ivar, dtype=np.float32).copy()
    bad = ~np.isfinite(f)
    f[bad] = 0.0
    iv[bad] = 0.0
    return f, iv


def require_position(path: str, ra: Any, dec: Any) -> tuple[float, float]:
    r, d = finite_or_none(ra), finite_or_none(dec)
    if r is None or d is None or not (-90 <= d <= 90):
        raise IngestError(f"{path}: no valid RA/DEC in the header (got {ra!r}, {dec!r})")
    return r, d
