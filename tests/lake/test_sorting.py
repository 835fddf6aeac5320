"""Rows are sorted before they are written; the numpy gather for pixel arrays must equal Arrow's take."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake.lake.files import sort_rows, take_rows

PIXELS = pa.list_(pa.field("element", pa.float32(), nullable=False))


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 40),
    width=st.integers(1, 9),
    chunks=st.integers(1, 3),
    ragged=st.booleans(),
    null_list=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
)
def test_take_rows_equals_arrow_take(n: int, width: int, chunks: int, ragged: bool, null_list: bool, seed: int) -> None:
    rng = np.random.default_rng(seed)
    lists = [rng.normal(size=width + (int(rng.integers(0, 3)) if ragged else 0)).astype(np.float32).tolist() for _ in range(n)]
    if null_list:
        lists[int(rng.integers(0, n))] = None
    tbl = pa.table(
        {
            "flux": pa.array(lists, PIXELS),
            "name": pa.array([f"s{i}" for i in range(n)]),
            "k": pa.array(rng.integers(0, 5, n)),
        }
    )
    cut = sorted(set(rng.integers(0, n, chunks - 1).tolist()) - {0})
    tbl = pa.concat_tables([tbl.slice(a, b - a) for a, b in zip([0, *cut], [*cut, n], strict=True)])
    order = rng.permutation(n)
    got = take_rows(tbl, order)
    assert got.schema == tbl.schema
    assert got.to_pylist() == tbl.take(pa.array(order)).to_pylist()


def test_sort_rows_orders_by_healpix_then_key_and_keeps_sorted_input() -> None:
    tbl = pa.table({"_healpix_29": [5, 1, 5, 0], "pk": [2, 7, 1, 3], "flux": pa.array([[1.0], [2.0], [3.0], [4.0]], PIXELS)})
    out = sort_rows(tbl, ("pk",))
    assert out.column("_healpix_29").to_pylist() == [0, 1, 5, 5]
    assert out.column("pk").to_pylist() == [3, 7, 1, 2]
    assert out.column("flux").to_pylist() == [[4.0], [2.0], [3.0], [1.0]]
    assert sort_rows(out, ("pk",)) is out
