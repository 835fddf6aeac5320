"""Typed declarations read from data_schema/: tables, columns, flag columns, flags and summary rules.

Flag values are 64-bit. They are stored as signed int64 (two's complement), so bit 63 is the sign bit;
every mask here is kept in that signed form so that Python, DuckDB and Polars agree bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

TableKind = Literal["source", "spectrum", "pipeline", "pixel", "log", "catalog"]
RuleKind = Literal["marked", "any_bit", "all_of", "any_of"]

INT64_MIN = -(2**63)
UINT64_LIMIT = 2**64


def signed_mask(bit: int) -> int:
    """The int64 (two's complement) value with only ``bit`` set."""
    return INT64_MIN if bit == 63 else 1 << bit


def to_int64(value: int) -> int:
    """Map a 64-bit pattern given as signed or unsigned Python int onto its int64 value."""
    if not INT64_MIN <= value < UINT64_LIMIT:
        raise ValueError(f"flag value {value} does not fit in 64 bits")
    return value - UINT64_LIMIT if value >= 2**63 else value


@dataclass(frozen=True)
class Column:
    """One stored column: name, Arrow type string, unit, description, nullability, fill value and the
    inclusive range ``[minimum, maximum]`` its values must lie in (checked on write; NaN and null pass; None: unbounded)."""

    name: str
    type: str
    description: str
    unit: str = ""
    nullable: bool = True
    fill: object = None
    hidden: bool = False
    minimum: float | None = None
    maximum: float | None = None
    fits_card: str | None = None  # header card of the DRP file the table is read from (copied as a finite float or null)
    renamed_from: str = ""  # the name it had in an earlier data_schema revision (a rename `migrate` applies)


@dataclass(frozen=True)
class Flag:
    """A named bit of a flag column."""

    bit: int
    name: str
    description: str = ""
    warn: bool = False
    bad: bool = False
    aliases: tuple[str, ...] = ()
    note: str = ""

    @property
    def mask(self) -> int:
        return signed_mask(self.bit)


@dataclass(frozen=True)
class Rule:
    """A summary rule (flag_warn or flag_bad) compiled to masks.

    True when ``any_bit`` and the value is non-zero, or when ``value & any_mask != 0``, or when
    ``value & m == m`` for some ``m`` in ``all_masks``.
    """

    kind: RuleKind
    any_mask: int = 0
    all_masks: tuple[int, ...] = ()
    any_bit: bool = False
    flags: tuple[tuple[str, ...], ...] = ()

    def evaluate(self, value: int) -> bool:
        if self.any_bit:
            return value != 0
        if value & self.any_mask:
            return True
        return any(value & m == m for m in self.all_masks)


@dataclass(frozen=True)
class Edition:
    """The flags and summary rules of one flag column for a range of Astra versions [since, until)."""

    flags: tuple[Flag, ...]
    since: int | None = None
    until: int | None = None
    flag_warn: Rule | None = None
    flag_bad: Rule | None = None
    source: str = ""

    def covers(self, v_astra: int | None) -> bool:
        if v_astra is None:
            return self.until is None
        return (self.since is None or v_astra >= self.since) and (self.until is None or v_astra < self.until)

    def flag(self, name: str) -> Flag | None:
        for f in self.flags:
            if f.name == name or name in f.aliases:
                return f
        return None


@dataclass(frozen=True)
class FlagColumn:
    """An integer bitmask column and its editions (one per range of Astra versions)."""

    name: str
    editions: tuple[Edition, ...]
    summary: bool = False
    note: str = ""
    signed32_source: bool = False

    def edition_for(self, v_astra: int | None = None) -> Edition:
        """The edition that judges a result of this Astra version (None: the newest)."""
        for edition in self.editions:
            if edition.covers(v_astra):
                return edition
        raise LookupError(f"{self.name}: no flag edition covers v_astra={v_astra}")

    @property
    def latest(self) -> Edition:
        return self.edition_for(None)

    @property
    def versioned(self) -> bool:
        return len(self.editions) > 1

    def all_flag_names(self) -> list[str]:
        """Names across all editions, newest edition first, without repeats."""
        names: list[str] = []
        for edition in sorted(self.editions, key=lambda e: -(e.since or 0)):
            names += [f.name for f in edition.flags if f.name not in names]
        return names


@dataclass(frozen=True)
class Grid:
    """A wavelength grid: log-linear (crval, cdelt, npix) or stored per row (npix only)."""

    name: str
    kind: Literal["log_linear", "per_row"]
    npix: int
    crval: float = 0.0
    cdelt: float = 0.0
    description: str = ""


@dataclass(frozen=True)
class Table:
    """A table of the lake, as declared in data_schema/tables/<name>.yaml plus its kind's column groups."""

    name: str
    kind: TableKind
    description: str
    columns: tuple[Column, ...]
    flag_columns: tuple[FlagColumn, ...] = ()
    key: tuple[str, ...] = ()
    natural_key: tuple[str, ...] = ()
    healpix_order: int = 1
    row_group_rows: int = 122_880
    codec: str = "zstd"  # Parquet codec of the non-pixel columns
    grid: Grid | None = None
    pixel_columns: tuple[str, ...] = ()
    notes: str = ""
    _by_name: dict[str, Column] = field(default_factory=dict, compare=False, repr=False)

    def column(self, name: str) -> Column:
        if not self._by_name:
            self._by_name.update({c.name: c for c in self.columns})
        return self._by_name[name]

    def flag_column(self, name: str | None = None) -> FlagColumn:
        """A flag column by name; without a name, the table's summary column (e.g. result_flags)."""
        for fc in self.flag_columns:
            if (name is None and fc.summary) or fc.name == name:
                return fc
        from astra_lake.errors import UnknownTableError

        valid = ", ".join(fc.name for fc in self.flag_columns) or "(none)"
        what = f"flag column {name!r}" if name else "a summary flag column"
        raise UnknownTableError(f"table {self.name!r} has no {what}; flag columns: {valid}")

    @property
    def summary_column(self) -> FlagColumn | None:
        return next((fc for fc in self.flag_columns if fc.summary), None)

    @property
    def upsert_key(self) -> tuple[str, ...]:
        """Columns that identify a row across writes: the natural key where declared, else the key."""
        return self.natural_key or self.key

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


@dataclass(frozen=True)
class Roles:
    """What the lake does with its own columns (data_schema/common.yaml ``roles``)."""

    minted: dict[str, str]  # table kind -> identity column minted from a lake-wide sequence
    managed: frozenset[str]  # filled by the writer when absent
    timestamps: tuple[str, ...]  # set at every write
    kept_on_replace: tuple[str, ...]  # kept (with the minted identity) when an upsert replaces a row
    identity: tuple[str, ...]  # a spectrum's identity, carried to its results, batches and summary views

    @property
    def sequences(self) -> tuple[str, ...]:
        """The lake-wide sequences: each minted column once."""
        return tuple(dict.fromkeys(self.minted.values()))
