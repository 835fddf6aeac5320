"""Column metadata of release files: VOUnits, UCDs, descriptions, null fills, and the metadata blocks
that VO tools and astropy read back (VOParquet XML, astropy's ``table_meta_yaml``).

Release files follow upstream's FITS null conventions in every format (float NaN, integer -1, flag 0,
boolean False, text ""), because astropy, TOPCAT and pandas otherwise turn a nullable integer into a
float (losing 19-digit Gaia identifiers) or a null string into ``"None"``. Timestamps are ISO-8601
text (VOTable ``xtype="timestamp"``), as in the FITS files.
"""

from __future__ import annotations

import fnmatch
import functools
import warnings
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from typing import Any

import astropy.units as u
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import yaml

from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.products import column_meta, products_dir

VOTABLE_NS = "http://www.ivoa.net/xml/VOTable/v1.3"


@functools.lru_cache(maxsize=2)
def _vo_decl(directory: str) -> dict[str, Any]:
    raw: dict[str, Any] = yaml.safe_load((products_dir(load_schema()) / "vo.yaml").read_text())
    return raw


def _decl(schema: Schema | None = None) -> dict[str, Any]:
    return _vo_decl(str((schema or load_schema()).directory))


def vounit(unit: str, schema: Schema | None = None) -> str:
    """The VOUnit for a data_schema unit spelling ("" when VOUnit cannot express it)."""
    return str(_decl(schema)["units"].get(unit, unit)) if unit else ""


def is_vounit(text: str) -> bool:
    if not text:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", u.UnitsWarning)  # deprecated-but-valid units (Angstrom, erg)
            u.Unit(text, format="vounit")
    except ValueError:
        return False
    return True


def ucd(name: str, schema: Schema | None = None) -> str:
    decl = _decl(schema)["ucds"]
    if name in decl["exact"]:
        return str(decl["exact"][name])
    for pattern, value in decl["patterns"].items():
        if fnmatch.fnmatchcase(name, pattern):
            return str(value)
    return ""


@dataclass(frozen=True)
class ColumnInfo:
    """What a release says about one column."""

    name: str
    unit: str  # VOUnit
    description: str  # with the upstream unit spelling when VOUnit cannot express it
    ucd: str
    upstream_unit: str
    is_flag: bool


def column_info(schema: Schema, table: str, column: str, *, description: str | None = None) -> ColumnInfo:
    """Metadata of a column of a table's view (flag booleans included), joined columns named by ``table``."""
    _typ, unit, desc = column_meta(schema, table, column)
    desc = description or desc or column.replace("_", " ")
    vo = vounit(unit, schema)
    if unit and vo != unit and not vo:
        desc = f"{desc} [unit: {unit}]"
    flags = {fc.name for fc in schema.table(table).flag_columns}
    return ColumnInfo(column, vo, desc, ucd(column, schema), unit, column in flags)


def fill_value(typ: pa.DataType, is_flag: bool) -> Any:
    """Upstream's FITS null fill for an Arrow type (astra-facts §2.3)."""
    if pa.types.is_floating(typ):
        return float("nan")
    if pa.types.is_integer(typ):
        return 0 if is_flag else -1
    if pa.types.is_boolean(typ):
        return False
    return ""


def conform(col: pa.Array, info: ColumnInfo) -> pa.Array:
    """A column in release form: nulls filled, timestamps as ISO text, packed bits as booleans."""
    typ = col.type
    if pa.types.is_timestamp(typ):
        return pc.fill_null(pc.strftime(col, format="%Y-%m-%dT%H:%M:%S"), "")
    if pa.types.is_binary(typ):
        return packed_bits_to_bools(col)
    if pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ):
        return col.fill_null(pa.scalar([], typ)) if col.null_count else col
    if col.null_count == 0:
        return col
    if pa.types.is_null(typ):
        return pa.array([""] * len(col), pa.string())
    return pc.fill_null(col, pa.scalar(fill_value(typ, info.is_flag), typ))


def packed_bits_to_bools(col: pa.Array) -> pa.Array:
    """Little-bit-order packed bytes (sdss5_target_flags) -> one boolean per bit (as in the FITS files)."""
    values = [b"" if v is None else v for v in col.to_pylist()]
    bits = [np.unpackbits(np.frombuffer(v, np.uint8), bitorder="little").astype(bool) for v in values]
    return pa.array(bits, pa.list_(pa.bool_()))


def release_type(typ: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(typ):
        return pa.string()
    if pa.types.is_binary(typ):
        return pa.list_(pa.bool_())
    if pa.types.is_null(typ):
        return pa.string()
    return typ


def arrow_field(info: ColumnInfo, typ: pa.DataType) -> pa.Field:
    meta = {"description": info.description}
    if info.unit:
        meta["unit"] = info.unit
    if info.ucd:
        meta["ucd"] = info.ucd
    if info.upstream_unit:
        meta["astra_lake.unit"] = info.upstream_unit
    return pa.field(info.name, release_type(typ), metadata=meta)


_VOTYPE = {
    pa.int64(): "long",
    pa.int32(): "int",
    pa.int16(): "short",
    pa.uint8(): "unsignedByte",
    pa.float32(): "float",
    pa.float64(): "double",
    pa.bool_(): "boolean",
}


def votable_xml(fields: list[pa.Field], infos: list[ColumnInfo], text_widths: dict[str, int], description: str) -> bytes:
    """The VOParquet metadata document (IVOA VOTable 1.3 with a PARQUET element): one FIELD per column."""
    root = ET.Element("VOTABLE", {"version": "1.3", "xmlns": VOTABLE_NS})
    table = ET.SubElement(ET.SubElement(root, "RESOURCE", {"type": "results"}), "TABLE")
    ET.SubElement(table, "DESCRIPTION").text = description
    for f, info in zip(fields, infos, strict=True):
        attrs = {"name": f.name}
        typ = f.type
        if pa.types.is_string(typ):
            attrs.update(datatype="char", arraysize=str(max(1, text_widths.get(f.name, 1))))
            if info.ucd in ("time.creation", "time.processing"):
                attrs["xtype"] = "timestamp"
        elif pa.types.is_list(typ):
            attrs.update(datatype=_VOTYPE[typ.value_type], arraysize="*")
        else:
            attrs["datatype"] = _VOTYPE[typ]
        if info.unit:
            attrs["unit"] = info.unit
        if info.ucd:
            attrs["ucd"] = info.ucd
        el = ET.SubElement(table, "FIELD", attrs)
        ET.SubElement(el, "DESCRIPTION").text = info.description
        if pa.types.is_integer(typ):
            ET.SubElement(el, "VALUES", {"null": str(fill_value(typ, info.is_flag))})
    ET.SubElement(table, "PARQUET", {"type": "Parquet-local-XML"})
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def astropy_table_yaml(fields: list[pa.Field], infos: list[ColumnInfo]) -> str:
    """astropy's ``table_meta_yaml`` (what ``Table.read`` of a Parquet file takes units and descriptions from)."""
    from astropy.table import Column, Table
    from astropy.table.meta import get_yaml_from_table

    cols = []
    for f, info in zip(fields, infos, strict=True):
        dtype = (
            np.dtype("U1")
            if pa.types.is_string(f.type)
            else np.dtype(object)
            if pa.types.is_list(f.type)
            else f.type.to_pandas_dtype()
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", u.UnitsWarning)
            unit = u.Unit(info.unit, format="vounit").to_string() if info.unit else None
        cols.append(Column(np.zeros(0, dtype), name=f.name, unit=unit, description=info.description))
    return "\n".join(get_yaml_from_table(Table(cols)))


def text_lengths(batch: pa.RecordBatch) -> dict[str, int]:
    """Longest text value (characters) of each string column of a batch."""
    out = {}
    for f, col in zip(batch.schema, batch.columns, strict=True):
        if pa.types.is_string(f.type) and len(col):
            out[f.name] = int(pc.max(pc.utf8_length(col)).as_py() or 0)
    return out


def file_metadata(fields: list[pa.Field], infos: list[ColumnInfo], widths: dict[str, int], description: str) -> dict[str, str]:
    """Key-value metadata every release Parquet file carries (written into the footer when it closes)."""
    meta = {
        "IVOA.VOTable-Parquet.version": "1.0",
        "IVOA.VOTable-Parquet.content": votable_xml(fields, infos, widths, description).decode("utf-8"),
    }
    for f in fields:
        if pa.types.is_string(f.type):
            meta[f"table::len::{f.name}"] = str(max(1, widths.get(f.name, 1)))
    return meta
