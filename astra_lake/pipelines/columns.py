"""What every science module returns: result columns as numpy arrays, with flag bits from data_schema/."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from astra_lake.schema.flags import encode

Arrays = dict[str, npt.NDArray[np.generic]]


def flag_mask(table: str, name: str, column: str | None = None) -> int:
    """The bit of a named flag of a table's flag column (its summary column by default), from data_schema/."""
    return encode(table, [name], column=column)


def set_where(flags: npt.NDArray[np.int64], table: str, name: str, condition: npt.ArrayLike) -> None:
    """OR the named flag into ``flags`` where ``condition`` holds."""
    flags |= np.where(np.asarray(condition, dtype=bool), np.int64(flag_mask(table, name)), np.int64(0))


def usable(ivar: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Spectra with at least one pixel of positive, finite ivar."""
    iv = np.atleast_2d(np.asarray(ivar, dtype=np.float32))
    return np.asarray((np.isfinite(iv) & (iv > 0)).any(axis=1))


NO_PREDICTION = "no prediction (no usable pixel, or non-finite output)"


def no_prediction(flags: npt.ArrayLike, table: str, reason: str = NO_PREDICTION) -> dict[int, str]:
    """Row -> reason for the rows whose ``flag_runtime_exception`` is set (the runner's ``Output.failed``)."""
    mask = flag_mask(table, "flag_runtime_exception")
    return {int(i): reason for i in np.flatnonzero(np.asarray(flags) & mask)}
