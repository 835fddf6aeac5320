"""Fixed-width list columns (pixel arrays) read straight from the Parquet data pages the lake writes.

A Parquet reader decodes a ``list<float>`` column through one repetition and one definition level per
value and assembles list offsets from them (~0.5-1 GB/s per core), although in the lake's files every
list of a pixel column holds exactly the table's declared number of values: the writer validates it
and records the width as ``astra_lake.shape.<col>`` in each file's metadata. For such columns this
module leaves the levels alone and copies each page's values (decompressed, byte streams re-joined)
straight into an ``(n, width)`` numpy array, several GB/s per core. Checks: the width in the file
metadata, the number of values of every page (the page header's level count must equal the values
present: no null or empty list) and of every column chunk (rows x width). pyarrow exposes no page
API, hence the small reader of page headers below (Thrift compact protocol, Parquet format spec).

Anything else (a foreign file, dictionary pages, a null list, an unknown codec or encoding) raises
:class:`UnsupportedLayout`: the caller then reads the column with pyarrow.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

PLAIN, BYTE_STREAM_SPLIT, RLE = 0, 9, 3  # parquet.thrift Encoding
DATA_PAGE, DICTIONARY_PAGE, DATA_PAGE_V2 = 0, 2, 3  # parquet.thrift PageType
PHYSICAL: dict[str, np.dtype] = {
    "FLOAT": np.dtype(np.float32),
    "DOUBLE": np.dtype(np.float64),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
}
CODECS = {"UNCOMPRESSED": None, "LZ4": "lz4_raw", "LZ4_RAW": "lz4_raw", "ZSTD": "zstd", "SNAPPY": "snappy", "GZIP": "gzip"}


class UnsupportedLayout(Exception):
    """The column chunk is not a fixed-width, null-free list this reader handles; read it with pyarrow."""


# -- Thrift compact protocol: just enough to read a PageHeader ------------------------------------------
def _varint(b: memoryview, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        x = b[i]
        i += 1
        out |= (x & 0x7F) << shift
        if x < 0x80:
            return out, i
        shift += 7


def _skip(b: memoryview, i: int, kind: int) -> int:
    if kind in (1, 2):  # booleans live in the field header
        return i
    if kind == 3:
        return i + 1
    if kind in (4, 5, 6):
        return _varint(b, i)[1]
    if kind == 7:
        return i + 8
    if kind == 8:
        n, i = _varint(b, i)
        return i + n
    if kind in (9, 10):
        n, elem = b[i] >> 4, b[i] & 15
        i += 1
        if n == 15:
            n, i = _varint(b, i)
        for _ in range(n):
            i = i + 1 if elem in (1, 2) else _skip(b, i, elem)
        return i
    if kind == 11:
        n, i = _varint(b, i)
        if n:
            kv = b[i]
            i += 1
            for _ in range(n):
                i = _skip(b, _skip(b, i, kv >> 4), kv & 15)
        return i
    if kind == 12:
        return _struct(b, i)[1]
    raise UnsupportedLayout(f"thrift type {kind}")


def _struct(b: memoryview, i: int) -> tuple[dict[int, Any], int]:
    """The integer, boolean and struct fields of a compact-protocol struct by field id; the position after it."""
    out: dict[int, Any] = {}
    fid = 0
    while True:
        head = b[i]
        i += 1
        if head == 0:
            return out, i
        kind, delta = head & 15, head >> 4
        if delta:
            fid += delta
        else:
            v, i = _varint(b, i)
            fid = (v >> 1) ^ -(v & 1)
        if kind in (4, 5, 6):
            v, i = _varint(b, i)
            out[fid] = (v >> 1) ^ -(v & 1)
        elif kind == 12:
            out[fid], i = _struct(b, i)
        elif kind in (1, 2):
            out[fid] = kind == 1
        else:
            i = _skip(b, i, kind)


@dataclass(frozen=True)
class _Page:
    """A data page: its header's counts and where its (possibly compressed) values sit."""

    num_values: int  # levels in the page; equals the values present when no list is null or empty
    encoding: int
    start: int  # file offset of the page's body
    size: int  # compressed body size
    uncompressed: int
    levels: int  # v2: bytes of (uncompressed) levels before the values; v1: -1 (levels inside the body)
    compressed: bool


def _pages(buf: memoryview, start: int, end: int) -> Iterator[_Page]:
    i = start
    while i < end:
        head, body = _struct(buf, i)
        kind, uncompressed, size = head.get(1), head.get(2, 0), head.get(3, 0)
        if kind == DATA_PAGE:
            dp = head[5]
            if dp.get(3, RLE) != RLE or dp.get(4, RLE) != RLE:
                raise UnsupportedLayout("levels not RLE-encoded")
            yield _Page(dp[1], dp[2], body, size, uncompressed, -1, True)
        elif kind == DATA_PAGE_V2:
            dp = head[8]
            if dp.get(2, 0):
                raise UnsupportedLayout("null values or lists")
            yield _Page(dp[1], dp[4], body, size, uncompressed, dp[5] + dp[6], dp.get(7, True))
        elif kind == DICTIONARY_PAGE:
            raise UnsupportedLayout("dictionary-encoded")
        i = body + size


# -- the value copy: byte-stream-split streams re-joined, or plain values, into the output -----------------
@numba.njit(nogil=True, cache=True)
def _join4(src: npt.NDArray[np.uint8], total: int, first: int, out: npt.NDArray[np.uint32]) -> None:
    n = out.size
    a, b = src[first : first + n], src[total + first : total + first + n]
    c, d = src[2 * total + first : 2 * total + first + n], src[3 * total + first : 3 * total + first + n]
    for i in range(n):
        out[i] = np.uint32(a[i]) | (np.uint32(b[i]) << 8) | (np.uint32(c[i]) << 16) | (np.uint32(d[i]) << 24)


def _copy_values(values: npt.NDArray[np.uint8], encoding: int, total: int, first: int, out: np.ndarray) -> None:
    """Values ``first .. first + out.size`` of a page holding ``total`` values into ``out`` (1-d). Byte
    streams of 8-byte values are re-joined as two 4-byte halves (wavelengths only, not on the hot path)."""
    if encoding == PLAIN:
        np.copyto(out.view(np.uint8), values[first * out.itemsize : (first + out.size) * out.itemsize])
    elif encoding == BYTE_STREAM_SPLIT and out.itemsize == 4:
        _join4(values, total, first, out.view(np.uint32))
    elif encoding == BYTE_STREAM_SPLIT and out.itemsize == 8:
        halves = out.view(np.uint32).reshape(-1, 2)
        lo, hi = np.empty(out.size, np.uint32), np.empty(out.size, np.uint32)
        _join4(values, total, first, lo)
        _join4(values[4 * total :], total, first, hi)
        halves[:, 0], halves[:, 1] = lo, hi  # little-endian: low half first
    else:
        raise UnsupportedLayout(f"encoding {encoding}")


@dataclass(frozen=True)
class _Column:
    """One list column of a file: its value type, codec and the byte range of its chunk in each row group."""

    dtype: np.dtype
    codec: pa.Codec | None
    width: int
    ranges: list[tuple[int, int]]


class ListPages:
    """Page-level reads of the fixed-width list columns of one Parquet file (its bytes, e.g. a memory
    map, and its footer)."""

    def __init__(self, buf: memoryview, metadata: pq.FileMetaData) -> None:
        self._buf = buf
        self.metadata = metadata
        self.rows = np.array([metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)], np.int64)
        self._leaves: dict[str, list[int]] = {}
        for j in range(metadata.num_columns):
            self._leaves.setdefault(metadata.schema.column(j).path.split(".")[0], []).append(j)
        self._columns: dict[str, _Column | UnsupportedLayout] = {}

    def _column(self, name: str) -> _Column:
        if name not in self._columns:
            try:
                self._columns[name] = self._locate(name)
            except UnsupportedLayout as exc:
                self._columns[name] = exc
        col = self._columns[name]
        if isinstance(col, UnsupportedLayout):
            raise col
        return col

    def _locate(self, name: str) -> _Column:
        md = self.metadata
        width = int((md.metadata or {}).get(f"astra_lake.shape.{name}".encode(), b"0"))
        leaves = self._leaves.get(name, [])
        if width <= 0 or len(leaves) != 1:
            raise UnsupportedLayout(f"{name}: no declared width")
        leaf = md.schema.column(leaves[0])
        if leaf.max_repetition_level != 1 or leaf.physical_type not in PHYSICAL:
            raise UnsupportedLayout(f"{name}: not a list of numbers")
        ranges, codecs = [], set()
        for g in range(md.num_row_groups):
            chunk = md.row_group(g).column(leaves[0])
            if chunk.has_dictionary_page or chunk.compression not in CODECS:
                raise UnsupportedLayout(f"{name}: dictionary or codec {chunk.compression}")
            codecs.add(CODECS[chunk.compression])
            ranges.append((chunk.data_page_offset, chunk.data_page_offset + chunk.total_compressed_size))
        if len(codecs) > 1:
            raise UnsupportedLayout(f"{name}: codecs {codecs}")
        codec = next(iter(codecs), None)
        return _Column(PHYSICAL[leaf.physical_type], pa.Codec(codec) if codec else None, width, ranges)

    def read(self, name: str, groups: Sequence[int], out: np.ndarray, first: int = 0) -> None:
        """Rows ``first .. first + len(out)`` of row groups ``groups`` (taken together) of list column
        ``name`` into ``out`` of shape ``(n, width)``."""
        col = self._column(name)
        if out.dtype != col.dtype or out.ndim != 2 or out.shape[1] != col.width or not out.flags.c_contiguous:
            raise UnsupportedLayout(f"{name}: output {out.dtype}{out.shape}, stored {col.dtype} x {col.width}")
        flat = out.reshape(-1)
        lo, hi = first * col.width, (first + len(out)) * col.width  # wanted values of the groups taken together
        pos = 0  # values of the groups before the current page
        for g in groups:
            start, end = col.ranges[g]
            expected, seen = int(self.rows[g]) * col.width, 0
            for page in _pages(self._buf, start, end):
                a, b = max(lo, pos), min(hi, pos + page.num_values)
                if a < b:
                    values = self._values(col, page)
                    if values.size != page.num_values * col.dtype.itemsize:
                        raise UnsupportedLayout(f"{name}: a page holds null or empty lists")
                    _copy_values(values, page.encoding, page.num_values, a - pos, flat[a - lo : b - lo])
                pos += page.num_values
                seen += page.num_values
            if seen != expected:
                raise UnsupportedLayout(f"{name}: row group {g} has {seen} levels for {expected} values")

    def _values(self, col: _Column, page: _Page) -> npt.NDArray[np.uint8]:
        body = self._buf[page.start : page.start + page.size]
        if page.levels >= 0:  # v2: levels stored uncompressed before the values
            body, size = body[page.levels :], page.uncompressed - page.levels
            data = col.codec.decompress(body, size) if col.codec and page.compressed else body
            return np.frombuffer(data, np.uint8)
        data = col.codec.decompress(body, page.uncompressed) if col.codec else body
        raw = np.frombuffer(data, np.uint8)
        skip = 0
        for _ in range(2):  # repetition then definition levels, each behind its 4-byte length
            skip += 4 + int(raw[skip : skip + 4].view("<u4")[0])
        return raw[skip:]
