"""Flag semantics in Python: decode, encode, flag_warn and flag_bad for integers and numpy arrays.

The same rules are generated as DuckDB macros (``sql/astra_lake.sql``) and Polars expressions
(:mod:`astra_lake.schema.polars_flags`); the tests check all three agree on every 64-bit value.

NULL convention: a missing flag value (``None``) has unknown warn/bad (``None``), as in SQL.
``v_astra`` picks the edition of the rules (e.g. AstroNN 0.6 vs 0.8); ``None`` means the newest.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Literal, overload

from astra_lake.errors import FlagError, UndefinedSummaryFlagError
from astra_lake.schema.loader import load_schema
from astra_lake.schema.model import Edition, FlagColumn, Rule, Table, to_int64

if TYPE_CHECKING:  # the array functions import numpy themselves: scalar use (the CLI) starts without it
    import numpy as np
    import numpy.typing as npt

Summary = Literal["flag_warn", "flag_bad"]


def flag_column(table: str, column: str | None = None) -> FlagColumn:
    """The declared flag column (the table's summary column, e.g. result_flags, when not named)."""
    return load_schema().table(table).flag_column(column)


def summary_rule(table: str, which: Summary, v_astra: int | None = None) -> Rule:
    """The flag_warn / flag_bad rule of a table for a version; a clear error if it defines none."""
    tbl = load_schema().table(table)
    fc = tbl.summary_column
    rule = None if fc is None else getattr(fc.edition_for(v_astra), which)
    if rule is None:
        defined = defines(tbl)
        raise UndefinedSummaryFlagError(
            f"{table} does not define {which}"
            + (f" (it defines only {', '.join(defined)})" if defined else " (nor any summary flag)")
            + "; test its named flags instead"
        )
    return rule


def defines(table: Table) -> list[str]:
    """Which of flag_warn / flag_bad a table defines in any edition."""
    fc = table.summary_column
    if fc is None:
        return []
    return [w for w in ("flag_warn", "flag_bad") if any(getattr(e, w) is not None for e in fc.editions)]


def _checked(value: int) -> int:
    try:
        return to_int64(int(value))
    except ValueError as exc:
        raise FlagError(str(exc)) from None


@overload
def evaluate(table: str, which: Summary, value: None, v_astra: int | None = None) -> None: ...
@overload
def evaluate(table: str, which: Summary, value: int, v_astra: int | None = None) -> bool: ...
def evaluate(table: str, which: Summary, value: int | None, v_astra: int | None = None) -> bool | None:
    """flag_warn / flag_bad of one value."""
    rule = summary_rule(table, which, v_astra)
    return None if value is None else rule.evaluate(_checked(value))


def flag_warn(table: str, value: int | None, v_astra: int | None = None) -> bool | None:
    """Whether a result may have quality issues, by the table's (versioned) rule.

    >>> flag_warn("aspcap", 67108896)
    True
    """
    return evaluate(table, "flag_warn", value, v_astra)


def flag_bad(table: str, value: int | None, v_astra: int | None = None) -> bool | None:
    """Whether a result should not be used for science, by the table's (versioned) rule.

    >>> flag_bad("aspcap", 32), flag_bad("aspcap", 67108896)
    (False, True)
    """
    return evaluate(table, "flag_bad", value, v_astra)


def decode(table: str, value: int, column: str | None = None, v_astra: int | None = None) -> list[str]:
    """Names of the flags set in ``value`` (undefined bits are not named), in bit order.

    >>> decode("aspcap", 67108896)
    ['flag_teff_grid_edge_warn', 'flag_low_snr']
    """
    edition = flag_column(table, column).edition_for(v_astra)
    v = _checked(value)
    return [f.name for f in edition.flags if v & f.mask]


def encode(table: str, names: Iterable[str], column: str | None = None, v_astra: int | None = None) -> int:
    """The int64 value with the named flags set (aliases accepted).

    >>> encode("aspcap", ["flag_low_snr", "flag_teff_grid_edge_warn"])
    67108896
    """
    fc = flag_column(table, column)
    edition = fc.edition_for(v_astra)
    value = 0
    for name in names:
        flag = edition.flag(name)
        if flag is None:
            raise FlagError(f"{table}.{fc.name} has no flag {name!r}; valid: {', '.join(f.name for f in edition.flags)}")
        value |= flag.mask
    return to_int64(value & (2**64 - 1))


def undefined_bits(edition: Edition, value: int) -> list[int]:
    """Bits set in ``value`` that the edition does not name."""
    known = {f.bit for f in edition.flags}
    v = _checked(value)
    return [b for b in range(64) if (v >> b) & 1 and b not in known]


def _rule_array(rule: Rule, values: npt.NDArray[np.int64]) -> npt.NDArray[np.bool_]:
    import numpy as np

    if rule.any_bit:
        return values != 0
    out = (values & np.int64(rule.any_mask)) != 0
    for m in rule.all_masks:
        out |= (values & np.int64(m)) == np.int64(m)
    return out


def evaluate_array(
    table: str,
    which: Summary,
    values: npt.ArrayLike,
    v_astra: npt.ArrayLike | int | None = None,
) -> npt.NDArray[np.bool_]:
    """Vectorised flag_warn / flag_bad over an int64 array, with a per-row or scalar ``v_astra``."""
    import numpy as np

    vals = as_flag_array(values)
    fc = load_schema().table(table).summary_column
    versions = None if v_astra is None else np.asarray(v_astra, dtype=np.int64)
    if versions is None or versions.ndim == 0:
        return _rule_array(summary_rule(table, which, None if versions is None else int(versions)), vals)
    summary_rule(table, which, None)  # raises a clear error when the table defines no such rule
    assert fc is not None
    out = np.zeros(vals.shape, dtype=bool)
    for edition in fc.editions:
        rule = getattr(edition, which)
        rows = np.ones(vals.shape, dtype=bool)
        if edition.since is not None:
            rows &= versions >= edition.since
        if edition.until is not None:
            rows &= versions < edition.until
        if rule is not None and rows.any():
            out[rows] = _rule_array(rule, vals[rows])
    return out


def decode_array(table: str, values: npt.ArrayLike, column: str | None = None, v_astra: int | None = None) -> list[list[str]]:
    """:func:`decode` over an array (one list of names per value)."""
    import numpy as np

    edition = flag_column(table, column).edition_for(v_astra)
    vals = as_flag_array(values)
    hits = [(f.name, (vals & np.int64(f.mask)) != 0) for f in edition.flags]
    return [[name for name, set_ in hits if set_[i]] for i in range(len(vals))]


def as_flag_array(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Flag values as int64 (uint64 bit patterns are reinterpreted, never wrapped or rejected)."""
    import numpy as np

    arr = np.asarray(values)
    if arr.dtype == np.uint64:
        return arr.view(np.int64)
    if arr.dtype.kind not in "iu":
        raise FlagError(f"flag values must be integers, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def from_signed32(values: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Recover 32-bit flag patterns that arrived as negative signed 32-bit integers (bit 31 set).

    >>> from_signed32([-2147483648, -1, 5]).tolist()
    [2147483648, 4294967295, 5]
    """
    import numpy as np

    return np.asarray(values, dtype=np.int64) & np.int64(0xFFFFFFFF)


def sdss5_target_bits(flags: bytes | None) -> list[int] | None:
    """Bits set in an ``sdss5_target_flags`` bitset (bit b lives in byte b // 8, bit b % 8).

    >>> sdss5_target_bits(bytes([0b110, 0b1]))
    [1, 2, 8]
    """
    import numpy as np

    if flags is None:
        return None
    bits = np.unpackbits(np.frombuffer(bytes(flags), dtype=np.uint8), bitorder="little")
    return [int(b) for b in np.flatnonzero(bits)]


def sdss5_cartons(flags: bytes | None) -> list[str] | None:
    """Carton labels of the bits set in ``sdss5_target_flags`` (SDSS-V targeting table in data_schema/)."""
    bits = sdss5_target_bits(flags)
    if bits is None:
        return None
    labels = {t.bit: t.label for t in load_schema().targeting}
    return [labels[b] for b in bits if b in labels]
