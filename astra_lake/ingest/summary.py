"""Summary files (astraAllStar / astraAllVisit<Pipeline>, mwmAllStar / mwmAllVisit) read column by column.

A release file holds about a million rows of a few hundred columns. Its binary tables are read in row
chunks straight from the file: the chunk's bytes become a numpy record array, each needed column a
view of it, converted to Arrow as a whole (byte order, FITS TZERO conventions, logicals, strings,
bit sets, version strings). Memory stays bounded by the chunk, and no Python runs per row.

HDU 1 holds BOSS rows and HDU 2 APOGEE rows (astra-facts §5.3, §5.4). Each row gives a source, a
spectrum (coadd or visit; metadata only, no pixels) and, in astraAll files, a pipeline result.
"""

from __future__ import annotations

import gzip
import io
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io import fits

from astra_lake.errors import IngestError
from astra_lake.ingest.extract import parse_timestamp
from astra_lake.lake.conform import MANAGED, storage_schema
from astra_lake.schema.flags import from_signed32
from astra_lake.schema.loader import load_schema
from astra_lake.schema.model import Table
from astra_lake.schema.versions import version_to_int

T = TypeVar("T")

# The spectrum table of HDU 1 (BOSS) and HDU 2 (APOGEE) of each kind of summary file.
SPECTRA = {
    "astraAllStar": ("boss_combined", "apogee_star"),
    "astraAllVisit": ("boss_visit", "apogee_visit"),
    "mwmAllStar": ("boss_combined", "apogee_star"),
    "mwmAllVisit": ("boss_visit", "apogee_visit"),
}
# The PIPELINE card of astraAll files -> the lake table of its results.
PIPELINES = {
    "ASPCAP": "aspcap",
    "ApogeeNet": "apogeenet",
    "ApogeeNetV2": "apogeenet",
    "AstroNN": "astronn",
    "AstroNNdist": "astronn_dist",
    "BossNet": "bossnet",
    "ThePayne": "the_payne",
    "TheCannon": "the_cannon",
    "Slam": "slam",
    "SnowWhite": "snow_white",
    "MDwarfType": "mdwarftype",
    "Corv": "corv",
    "LineForest": "line_forest",
}
# Lake columns a summary row does not give: identities and timestamps are the lake's (sdss_id is data).
NOT_READ = MANAGED - {"sdss_id"}
# FITS stores unsigned integers as signed ones with this TZERO (and signed bytes as unsigned with -128).
UNSIGNED = {("i8", 2**63), ("i4", 2**31), ("i2", 2**15), ("u1", -128)}
CHUNK_BYTES = 16 * 2**20  # bytes of the file converted at a time
# Rows handed to the writer at a time (one writer batch, one new file per leaf): PART_BYTES of the file,
# or more for large HDUs, so that one file adds at most MAX_PARTS files to a leaf (the lake's automatic
# compaction starts at 8); memory then grows with the file but stays below its size.
PART_BYTES = 96 * 2**20
MAX_PARTS = 6


@dataclass(frozen=True)
class Hdu:
    """Where one binary-table HDU's rows are and how a row is laid out."""

    index: int
    spectrum_table: str
    rows: int
    offset: int  # byte offset of the first row (in the decompressed stream for .gz files)
    dtype: np.dtype[Any]  # one stored row (big-endian, packed)
    formats: dict[str, str]  # field -> FITS TFORM
    zeros: dict[str, int]  # field -> TZERO of the unsigned-integer conventions
    fields: dict[str, str]  # lower-case column name -> field


@dataclass(frozen=True)
class SummaryFile:
    """A summary file's layout: read once (headers only), then streamed table by table."""

    path: str
    kind: str
    format: str
    pipeline: str | None
    v_astra: int
    hdus: tuple[Hdu, ...]

    @property
    def rows(self) -> int:
        return sum(h.rows for h in self.hdus)


def plan(hdul: fits.HDUList, path: str, kind: str) -> SummaryFile:
    """The layout of an open summary file (headers only; no table data is read)."""
    hdr = hdul[0].header
    pipeline = None
    name = kind
    if kind.startswith("astra"):
        card = str(hdr.get("PIPELINE", "")).strip()
        pipeline = PIPELINES.get(card)
        if pipeline is None:
            raise IngestError(f"{path}: PIPELINE={hdr.get('PIPELINE')!r} is not one of {', '.join(PIPELINES)}", hdu=0)
        name = f"{kind}{card}"
    v_astra = version_to_int(str(hdr.get("V_ASTRA", "0.0.0")).strip())
    hdus = []
    for index, table in zip((1, 2), SPECTRA[kind], strict=True):
        if len(hdul) <= index or not isinstance(hdul[index], fits.BinTableHDU) or hdul[index].header.get("NAXIS2", 0) == 0:
            continue
        hdus.append(_layout(hdul[index], index, table, path))
    return SummaryFile(path, kind, name, pipeline, v_astra, tuple(hdus))


def _layout(hdu: fits.BinTableHDU, index: int, table: str, path: str) -> Hdu:
    cols = hdu.columns
    dtype = cols.dtype.newbyteorder(">")  # FITS stores big-endian; astropy reports native order
    if dtype.itemsize != hdu.header["NAXIS1"]:
        raise IngestError(
            f"{path}: HDU {index} rows are {hdu.header['NAXIS1']} bytes, columns add up to {dtype.itemsize}", hdu=index
        )
    zeros = {c.name: int(c.bzero) for c in cols if (c.format.recformat[-2:], c.bzero) in UNSIGNED}
    scaled = [c.name for c in cols if c.bscale not in (None, 1) or (c.bzero not in (None, 0) and c.name not in zeros)]
    if scaled:
        raise IngestError(f"{path}: HDU {index} column {scaled[0]} is scaled (TSCAL/TZERO); not a summary-file layout", hdu=index)
    return Hdu(
        index=index,
        spectrum_table=table,
        rows=int(hdu.header["NAXIS2"]),
        offset=int(hdu.fileinfo()["datLoc"]),
        dtype=dtype,
        formats={c.name: str(c.format) for c in cols},
        zeros=zeros,
        fields={c.name.lower(): c.name for c in cols},
    )


def columns_for(sf: SummaryFile, hdu: Hdu, table: str) -> list[str]:
    """Lake columns of ``table`` that the HDU gives (by case-insensitive name)."""
    tbl = load_schema().table(table)
    return [c.name for c in tbl.columns if c.name in hdu.fields and c.name not in NOT_READ and not c.type.startswith("fixed<")]


def parts(sf: SummaryFile, hdu: Hdu, table: str) -> Iterator[tuple[int, pa.Table]]:
    """``(first row, rows)`` of the HDU as Arrow columns of ``table``, a part at a time (see PART_BYTES).
    The next part is read and converted on a thread while the caller writes this one."""
    rows = max(1, PART_BYTES // hdu.dtype.itemsize, -(-hdu.rows // MAX_PARTS))
    return _ahead(_parts(sf, hdu, table, rows))


def _parts(sf: SummaryFile, hdu: Hdu, table: str, part_rows: int) -> Iterator[tuple[int, pa.Table]]:
    tbl = load_schema().table(table)
    names = columns_for(sf, hdu, table)
    pending: list[pa.Table] = []
    first = 0
    for start, raw in _chunks(sf, hdu):
        pending.append(_convert(sf, hdu, tbl, names, raw, start))
        if sum(p.num_rows for p in pending) >= part_rows or start + len(raw) == hdu.rows:
            out = pa.concat_tables(pending)
            yield first, out
            first += out.num_rows
            pending = []


def _ahead(items: Iterator[T]) -> Iterator[T]:
    """``items``, each produced on a thread while the caller works on the one before (numpy and Arrow
    release the GIL); an error is raised where the item would have been."""
    with ThreadPoolExecutor(1) as pool:
        future = pool.submit(next, items, None)
        while (item := future.result()) is not None:
            future = pool.submit(next, items, None)
            yield item


def _chunks(sf: SummaryFile, hdu: Hdu) -> Iterator[tuple[int, np.ndarray]]:
    """The HDU's rows as record arrays over the file's bytes, about CHUNK_BYTES at a time. The buffer is
    reused: a chunk is valid until the next one is read (every conversion copies out of it)."""
    size = hdu.dtype.itemsize
    step = max(1, CHUNK_BYTES // size)
    buffer = np.empty(min(step, hdu.rows) * size, np.uint8)
    with _open(sf.path) as fh:
        fh.seek(hdu.offset)
        for start in range(0, hdu.rows, step):
            n = min(step, hdu.rows - start)
            got = fh.readinto(buffer[: n * size].data)
            if got < n * size:
                row = start + got // size
                raise IngestError(
                    f"{sf.path}: HDU {hdu.index} ends at row {row} of {hdu.rows} (file truncated)", hdu=hdu.index, row=row
                )
            yield start, buffer[: n * size].view(hdu.dtype)


def _open(path: str) -> io.BufferedIOBase:
    if path.lower().endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _convert(sf: SummaryFile, hdu: Hdu, tbl: Table, names: list[str], raw: np.ndarray, start: int) -> pa.Table:
    schema = storage_schema(tbl)
    cols: dict[str, pa.Array] = {}
    for name in names:
        field = hdu.fields[name]
        try:
            cols[name] = _column(hdu, field, raw[field], schema.field(name).type)
        except (pa.ArrowInvalid, ValueError, TypeError) as exc:
            raise IngestError(
                f"{sf.path}: HDU {hdu.index} column {field}: {exc}", hdu=hdu.index, row=start, column=field
            ) from None
    out = pa.table(cols)
    if "v_astra" in out.column_names and not pa.types.is_integer(out.column("v_astra").type):
        out = out.set_column(out.column_names.index("v_astra"), "v_astra", _versions(out.column("v_astra"), sf, hdu, start))
    if tbl.kind == "source":
        out = _source_columns(sf, hdu, tbl, out, start)
    return out


def _column(hdu: Hdu, field: str, values: np.ndarray, target: pa.DataType) -> pa.Array:
    """One FITS column (a view into the chunk's bytes) as an Arrow array."""
    tform = hdu.formats[field]
    if values.dtype.kind == "S":
        text = pc.utf8_rtrim_whitespace(pa.array(values).cast(pa.string()))
        return _timestamps(text) if pa.types.is_timestamp(target) else text
    if tform.endswith("L"):  # logical: 'T' / 'F', 0 for undefined
        flags = values == ord("T")
        if pa.types.is_binary(target):  # a bit set (one row of bits per value)
            return _bitset(flags.reshape(len(flags), -1))
        if flags.ndim == 2:
            return _fixed_lists(flags)
        return pa.array(flags, mask=values == 0)
    native = values.astype(values.dtype.newbyteorder("="))  # a copy, out of the chunk's buffer
    if field in hdu.zeros:  # unsigned integers stored with TZERO = 2**(bits-1) (or -128 for signed bytes)
        native = _unsigned(native, hdu.zeros[field])
    if native.ndim == 2:
        return _bitset(native.astype(bool)) if pa.types.is_binary(target) else _fixed_lists(native)
    return pa.array(native)


def _timestamps(text: pa.Array) -> pa.Array:
    """ISO dates as UTC timestamps; blank or unparsable ones become null (as the per-file readers do)."""
    try:
        return pc.cast(pc.if_else(pc.equal(text, ""), None, text), pa.timestamp("us", tz="UTC"))
    except pa.ArrowInvalid:
        unique = pc.unique(text)
        parsed = [parse_timestamp(v) for v in unique.to_pylist()]
        return pc.take(pa.array(parsed, pa.timestamp("us", tz="UTC")), pc.index_in(text, unique))


def _unsigned(values: np.ndarray, zero: int) -> np.ndarray:
    if values.dtype == np.uint8 and zero == -128:
        return values.view(np.int8) ^ np.int8(-128)
    unsigned = values.view(values.dtype.str.replace("i", "u"))
    return unsigned ^ unsigned.dtype.type(zero)


def _fixed_lists(values: np.ndarray) -> pa.Array:
    flat = pa.array(values.reshape(-1))
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1]).cast(pa.list_(flat.type))


def _bitset(flags: np.ndarray) -> pa.Array:
    """Rows of bits as bytes, bit b in byte b // 8 (as the lake stores ``sdss5_target_flags``)."""
    packed = np.packbits(flags, axis=1, bitorder="little")
    fixed = pa.FixedSizeBinaryArray.from_buffers(pa.binary(packed.shape[1]), len(packed), [None, pa.py_buffer(packed.tobytes())])
    return fixed.cast(pa.binary())


def _versions(text: pa.ChunkedArray, sf: SummaryFile, hdu: Hdu, start: int) -> pa.Array:
    """``"X.Y.Z"`` strings as integers (once per distinct value); blanks take the header's V_ASTRA."""
    unique = pc.unique(text)
    try:
        ints = [sf.v_astra if not v or "." not in v else version_to_int(v) for v in unique.to_pylist()]
    except ValueError as exc:
        raise IngestError(
            f"{sf.path}: HDU {hdu.index} column v_astra: {exc}", hdu=hdu.index, row=start, column="v_astra"
        ) from None
    return pc.take(pa.array(ints, pa.int32()), pc.index_in(text, unique))


def _source_columns(sf: SummaryFile, hdu: Hdu, tbl: Table, out: pa.Table, start: int) -> pa.Table:
    """``source_key`` from ``sdss_id`` (every summary row has one) and 32-bit flag patterns recovered."""
    ids = out.column("sdss_id") if "sdss_id" in out.column_names else None
    if ids is None:
        raise IngestError(f"{sf.path}: HDU {hdu.index} has no sdss_id column", hdu=hdu.index, column="sdss_id")
    missing = pc.or_(pc.is_null(ids), pc.less(ids, 0))
    if pc.any(missing).as_py():
        row = start + int(np.flatnonzero(missing.to_numpy(zero_copy_only=False))[0])
        raise IngestError(f"{sf.path}: HDU {hdu.index} row {row} has no sdss_id", hdu=hdu.index, row=row, column="sdss_id")
    for fc in tbl.flag_columns:
        if fc.signed32_source and fc.name in out.column_names:
            fixed = from_signed32(out.column(fc.name).to_numpy())
            out = out.set_column(out.column_names.index(fc.name), fc.name, pa.array(fixed))
    keys = pc.binary_join_element_wise("sdss_id", pc.cast(ids, pa.string()), ":")
    return out.append_column("source_key", keys)
