"""A streaming FITS binary-table writer: Arrow record batches in, a byte-reproducible file out.

astropy writes a table it holds in memory; a release table can be larger than memory, so rows are
converted batch by batch into big-endian records and appended, the data checksum accumulated on the
way, and the header (whose NAXIS2 is known up front) rewritten in place with DATASUM / CHECKSUM once
the data are written. Header cards are formatted by astropy; nothing in a file depends on the clock
(the caller gives the CREATED time and the checksum comment time).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

BLOCK = 2880
_NUMERIC = {"E": ">f4", "D": ">f8", "K": ">i8", "J": ">i4", "I": ">i2", "B": "u1"}
Card = tuple[str, Any, str]


@dataclass(frozen=True)
class FitsColumn:
    """A binary-table column: name, type code (E D K J I B L A), repeat count, unit, description and
    the value written for nulls (NaN for floats; -1 or 0 for integers; False; empty string)."""

    name: str
    code: str
    repeat: int = 1
    unit: str = ""
    description: str = ""
    fill: Any = None

    @property
    def tform(self) -> str:
        return f"{self.repeat}{self.code}"

    @property
    def dtype(self) -> Any:
        if self.code == "A":
            return np.dtype(f"S{self.repeat}")
        base = np.dtype("S1") if self.code == "L" else np.dtype(_NUMERIC[self.code])
        return base if self.repeat == 1 else np.dtype((base, (self.repeat,)))


# -- checksums (FITS standard, appendix J: 32-bit ones' complement sums) ----------------------------
class OnesComplementSum:
    """Running 32-bit ones' complement sum of a byte stream fed in arbitrary pieces."""

    def __init__(self) -> None:
        self.total = 0
        self._rest = b""

    def update(self, data: bytes | memoryview) -> None:
        buf = self._rest + bytes(data) if self._rest else data
        n = len(buf) - len(buf) % 4
        self._rest = bytes(buf[n:])
        if n:
            words = np.frombuffer(buf, dtype=">u4", count=n // 4)
            self.total = _fold(self.total + int(np.add.reduce(words, dtype=np.uint64)))

    @property
    def value(self) -> int:
        if self._rest:  # only at the end of a stream, which FITS pads to whole blocks anyway
            return _fold(self.total + int.from_bytes(self._rest.ljust(4, b"\0"), "big"))
        return self.total


def _fold(value: int) -> int:
    while value >> 32:
        value = (value & 0xFFFFFFFF) + (value >> 32)
    return value


_EXCLUDED = frozenset(b":;<=>?@[\\]^_`")


def encode_checksum(value: int) -> str:
    """The 16-character ASCII encoding of a 32-bit sum's complement (the CHECKSUM card value)."""
    value = ~value & 0xFFFFFFFF
    out = bytearray(16)
    for i in range(4):
        byte = (value >> (24 - 8 * i)) & 0xFF
        quotient, remainder = byte // 4 + 0x30, byte % 4
        ch = [quotient + remainder, quotient, quotient, quotient]
        changed = True
        while changed:
            changed = False
            for j in (0, 2):
                if ch[j] in _EXCLUDED or ch[j + 1] in _EXCLUDED:
                    ch[j] += 1
                    ch[j + 1] -= 1
                    changed = True
        for j in range(4):
            out[4 * j + i] = ch[j]
    return bytes(out[15:] + out[:15]).decode("ascii")


# -- headers ------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=65536, typed=True)
def _image(key: str, value: Any, comment: str) -> str:
    """One card (or several: CONTINUE / long commentary) formatted by astropy, 80 characters each.
    Cached: the same cards (column definitions, section labels) recur in every file of a release."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", VerifyWarning)  # long TCOMM values become CONTINUE cards
        if key == "COMMENT":
            return str(fits.Card("COMMENT", str(value)).image)
        if key == "":
            return str(fits.Card("", str(value or "")).image)
        return str(fits.Card(key, value, comment).image)


def _header(cards: Iterable[Card]) -> bytes:
    """Header bytes: the cards, END, blank-padded to whole 2880-byte blocks."""
    text = "".join(_image(k, v, c) for k, v, c in cards) + "END".ljust(80)
    return (text + " " * ((-len(text)) % BLOCK)).encode("ascii")


def _render(cards: Sequence[Card], datasum: int, stamp: str) -> bytes:
    """Header bytes with DATASUM = ``datasum`` and the CHECKSUM that makes the HDU sum to -0 (where the
    cards have CHECKSUM / DATASUM: products declare them per HDU, as the datamodel does)."""

    def with_sums(checksum: str) -> bytes:
        done = []
        for key, value, comment in cards:
            if key == "CHECKSUM":
                done.append((key, checksum, f"HDU checksum updated {stamp}"))
            elif key == "DATASUM":
                done.append((key, str(datasum), f"data unit checksum updated {stamp}"))
            else:
                done.append((key, value, comment))
        return _header(done)

    if "CHECKSUM" not in (c[0] for c in cards):  # the product declares no checksum for this HDU
        return with_sums("")
    blank = with_sums("0" * 16)
    total = OnesComplementSum()
    total.update(blank)
    return with_sums(encode_checksum(_fold(total.value + datasum)))


def structural_cards(columns: Sequence[FitsColumn], nrows: int) -> list[Card]:
    width = sum(c.dtype.itemsize for c in columns)
    cards: list[Card] = [
        ("XTENSION", "BINTABLE", "binary table extension"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 2, "number of array dimensions"),
        ("NAXIS1", width, "length of dimension 1"),
        ("NAXIS2", nrows, "length of dimension 2"),
        ("PCOUNT", 0, "number of group parameters"),
        ("GCOUNT", 1, "number of groups"),
        ("TFIELDS", len(columns), "number of table fields"),
    ]
    for i, c in enumerate(columns, start=1):
        cards += [(f"TTYPE{i}", c.name, ""), (f"TFORM{i}", c.tform, "")]
        if c.unit:
            cards.append((f"TUNIT{i}", c.unit, ""))
        if c.description:
            cards.append((f"TCOMM{i}", c.description, ""))
    return cards


def write_primary(fh: BinaryIO, cards: Sequence[Card], stamp: str) -> None:
    """A header-only primary HDU."""
    base: list[Card] = [
        ("SIMPLE", True, "conforms to FITS standard"),
        ("BITPIX", 8, "array data type"),
        ("NAXIS", 0, "number of array dimensions"),
        ("EXTEND", True, ""),
    ]
    fh.write(_render([*base, *cards], 0, stamp))


# -- data ---------------------------------------------------------------------------------------
def _fixed_bytes(col: pa.Array, width: int) -> npt.NDArray[np.uint8]:
    """A binary/string column as an (n, width) uint8 matrix, zero-padded (nulls all zero)."""
    col = col.cast(pa.binary()) if not pa.types.is_binary(col.type) else col
    n = len(col)
    out = np.zeros((n, width), dtype=np.uint8)
    if n == 0:
        return out
    offsets = np.frombuffer(col.buffers()[1], dtype=np.int32, count=n + 1, offset=col.offset * 4)
    lengths = np.diff(offsets)
    if col.null_count:
        lengths = np.where(col.is_valid().to_numpy(zero_copy_only=False), lengths, 0)
    data = np.frombuffer(col.buffers()[2], dtype=np.uint8) if col.buffers()[2] is not None else np.zeros(0, np.uint8)
    if lengths.max(initial=0) > width:
        raise ValueError(f"a value of {lengths.max()} bytes does not fit a {width}-byte field")
    rows = np.repeat(np.arange(n), lengths)
    starts = np.repeat(offsets[:-1], lengths)
    within = np.arange(rows.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, within] = data[starts + within]
    return out


def _array_values(col: pa.Array, width: int, fill: Any) -> npt.NDArray[Any]:
    """A list column as an (n, width) array, short or null rows padded with ``fill``."""
    n = len(col)
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = pc.list_flatten(col).to_numpy(zero_copy_only=False)
    if np.all(lengths == width):
        return flat.reshape(n, width)
    out = np.full((n, width), fill, dtype=np.float64 if flat.dtype.kind == "f" or fill is None else flat.dtype)
    rows = np.repeat(np.arange(n), lengths)
    within = np.arange(rows.size) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[rows, within] = flat
    return out


def _logical(values: npt.NDArray[np.bool_]) -> npt.NDArray[np.bytes_]:
    return np.where(values, b"T", b"F").astype("S1")


def column_values(col: pa.Array, spec: FitsColumn) -> npt.NDArray[Any]:
    """The values of one Arrow column as numpy data in the FITS column's layout (nulls filled)."""
    typ = col.type
    if spec.code == "A":
        if pa.types.is_timestamp(typ):
            col = pc.strftime(col, format="%Y-%m-%dT%H:%M:%S")
        elif not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_binary(typ)):
            col = col.cast(pa.string())
        return _fixed_bytes(col, spec.repeat).view(f"S{spec.repeat}").reshape(-1)
    if spec.code == "L":
        if pa.types.is_binary(typ):  # packed bits (little bit order), one logical per bit
            nbytes = (spec.repeat + 7) // 8
            bits = np.unpackbits(_fixed_bytes(col, nbytes), axis=1, bitorder="little")[:, : spec.repeat]
            return _logical(bits.astype(bool))
        values = pc.fill_null(col, False).to_numpy(zero_copy_only=False)
        return _logical(values.astype(bool))
    if pa.types.is_list(typ) or pa.types.is_fixed_size_list(typ) or pa.types.is_large_list(typ):
        return _array_values(col, spec.repeat, np.nan if spec.fill is None else spec.fill)
    if spec.fill is not None and col.null_count:
        col = pc.fill_null(col, pa.scalar(spec.fill).cast(typ) if not pa.types.is_null(typ) else spec.fill)
    if pa.types.is_null(typ):
        return np.full(len(col), np.nan if spec.fill is None else spec.fill)
    values = col.to_numpy(zero_copy_only=False)
    if spec.code in ("E", "D") and values.dtype == object:
        values = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    return values


class BinTableWriter:
    """Write one binary-table HDU of ``nrows`` rows to ``fh``: call :meth:`write` per Arrow batch
    (columns in ``columns`` order), then :meth:`close`. The file must be seekable."""

    def __init__(self, fh: BinaryIO, columns: Sequence[FitsColumn], nrows: int, cards: Sequence[Card], stamp: str) -> None:
        self.fh, self.columns, self.nrows, self.stamp = fh, list(columns), nrows, stamp
        self.cards = [*structural_cards(self.columns, nrows), *cards]
        offsets = np.cumsum([0] + [c.dtype.itemsize for c in self.columns[:-1]]).tolist()
        self.dtype = np.dtype(
            {
                "names": [f"f{i}" for i in range(len(self.columns))],
                "formats": [c.dtype for c in self.columns],
                "offsets": offsets,
                "itemsize": sum(c.dtype.itemsize for c in self.columns),
            }
        )
        self.start = fh.tell()
        fh.write(_render(self.cards, 0, stamp))
        self.sum = OnesComplementSum()
        self.written = 0

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if batch.num_rows == 0:
            return
        rec = np.zeros(batch.num_rows, dtype=self.dtype)
        for i, spec in enumerate(self.columns):
            column = batch.column(i)
            if isinstance(column, pa.ChunkedArray):
                column = column.combine_chunks()
            rec[f"f{i}"] = column_values(column, spec)
        data = rec.tobytes()
        self.sum.update(data)
        self.fh.write(data)
        self.written += batch.num_rows

    def close(self) -> None:
        if self.written != self.nrows:
            raise ValueError(f"binary table declared {self.nrows} rows but {self.written} were written")
        size = self.written * self.dtype.itemsize
        pad = (-size) % BLOCK
        self.fh.write(b"\0" * pad)
        end = self.fh.tell()
        self.fh.seek(self.start)
        self.fh.write(_render(self.cards, self.sum.value, self.stamp))
        self.fh.seek(end)
