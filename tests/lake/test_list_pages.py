"""The page reader of fixed-width list columns equals pyarrow on every layout, and refuses what it cannot read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.lake.list_pages import ListPages, UnsupportedLayout
from astra_lake.query.spectra import open_file

TYPES = {"float32": pa.float32(), "int32": pa.int32(), "float64": pa.float64()}


def _table(n: int, width: int, kind: str, seed: int, metadata: bool = True, nulls: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    values = (rng.normal(size=n * width) * 100).astype(TYPES[kind].to_pandas_dtype())
    values[rng.random(values.size) < 0.3] = 0  # runs of zeros, like flags and masked ivar
    offsets = pa.array(np.arange(0, (n + 1) * width, width, dtype=np.int32))
    typ = pa.list_(pa.field("element", TYPES[kind], nullable=False))
    mask = pa.array(np.arange(n) == n // 2) if nulls else None
    pixels = pa.ListArray.from_arrays(offsets, pa.array(values), type=typ, mask=mask)
    tbl = pa.table({"spectrum_pk": pa.array(np.arange(n)), "flux": pixels})
    return tbl.replace_schema_metadata({"astra_lake.shape.flux": str(width)} if metadata else None)


def _reference(path: Path, groups: list[int], width: int) -> np.ndarray:
    col = pq.ParquetFile(path).read_row_groups(groups, columns=["flux"]).column(0).combine_chunks()
    return np.asarray(col.flatten()).reshape(-1, width)


def _pages(path: Path) -> ListPages:
    data = path.read_bytes()
    return ListPages(memoryview(data), pq.read_metadata(path))


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    width=st.integers(1, 300),
    kind=st.sampled_from(list(TYPES)),
    codec=st.sampled_from(["lz4", "zstd", "snappy", "none"]),
    split=st.booleans(),
    page_version=st.sampled_from(["1.0", "2.0"]),
    page_size=st.sampled_from([64, 4096, 1 << 20]),
    row_group=st.integers(1, 25),
    seed=st.integers(0, 2**16),
    data=st.data(),
)
def test_equals_pyarrow_on_every_layout(
    tmp_path_factory: pytest.TempPathFactory,
    n: int,
    width: int,
    kind: str,
    codec: str,
    split: bool,
    page_version: str,
    page_size: int,
    row_group: int,
    seed: int,
    data: st.DataObject,
) -> None:
    """Codecs, byte-stream-split or plain, data page v1/v2, several pages per chunk (pages may split a
    list), any row-group size; any set of row groups and any row range within them."""
    path = tmp_path_factory.mktemp("pages") / "f.parquet"
    pq.write_table(
        _table(n, width, kind, seed),
        path,
        row_group_size=row_group,
        compression=codec,
        use_byte_stream_split=["flux.list.element"] if split else False,
        use_dictionary=False,
        data_page_version=page_version,
        data_page_size=page_size,
    )
    pages = _pages(path)
    groups = data.draw(st.lists(st.integers(0, len(pages.rows) - 1), min_size=1, unique=True).map(sorted))
    want = _reference(path, groups, width)
    first = data.draw(st.integers(0, len(want) - 1))
    stop = data.draw(st.integers(first + 1, len(want)))
    out = np.empty((stop - first, width), want.dtype)
    pages.read("flux", groups, out, first=first)
    np.testing.assert_array_equal(out, want[first:stop])


@pytest.mark.parametrize(
    ("write", "table", "why"),
    [
        ({}, {"metadata": False}, "no declared width"),
        ({}, {"nulls": True}, "null or empty lists"),
        ({"data_page_version": "2.0"}, {"nulls": True}, "null values or lists"),
        ({"use_dictionary": True}, {}, "dictionary"),
    ],
)
def test_refuses_what_it_cannot_read(tmp_path: Path, write: dict, table: dict, why: str) -> None:
    path = tmp_path / "f.parquet"
    tbl = _table(8, 5, "int32", 1, **table)
    pq.write_table(tbl, path, **({"use_dictionary": False} | write))
    with pytest.raises(UnsupportedLayout, match=why):
        _pages(path).read("flux", [0], np.empty((7 if table.get("nulls") else 8, 5), np.int32))


def test_a_width_the_file_does_not_hold_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    tbl = _table(6, 5, "float32", 2).replace_schema_metadata({"astra_lake.shape.flux": "6"})
    pq.write_table(tbl, path, use_dictionary=False)
    with pytest.raises(UnsupportedLayout):
        _pages(path).read("flux", [0], np.empty((5, 6), np.float32))


def test_the_lake_files_take_the_page_path(populated: Lake) -> None:
    """Every pixel column of every file the lake wrote is read from its pages, equal to pyarrow."""
    tbl = populated.catalog.schema.table("apogee_star")
    for path in populated.snapshot().paths("apogee_star"):
        f = open_file(path)
        every = list(range(len(f.pages.rows)))
        for name, dtype in (("flux", np.float32), ("ivar", np.float32), ("pixel_flags", np.int32)):
            out = np.empty((int(f.pages.rows.sum()), tbl.grid.npix), dtype)  # type: ignore[union-attr]
            f.pages.read(name, every, out)
            want = pq.read_table(path, columns=[name]).column(0).combine_chunks().flatten()
            np.testing.assert_array_equal(out.reshape(-1), np.asarray(want))
