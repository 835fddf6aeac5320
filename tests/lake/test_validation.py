"""Bad data is refused with a one-line message naming table, column and row; nothing is written."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from astra_lake import Lake
from astra_lake.errors import ValidationError
from astra_lake.ingest import synthetic as S


def _rows(n: int = 3) -> dict[str, object]:
    return {"sdss_id": np.arange(1, n + 1), "ra": np.linspace(1, 2, n), "dec": np.linspace(-1, 1, n)}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"nope": [1, 2, 3]}, r"source: unknown column\(s\) nope"),
        ({"ra": ["a", "b", "c"]}, r"source\.ra: expected double, got string"),
        ({"sdss_id": [1.5, 2.5, 3.5]}, r"source\.sdss_id: expected int64, got double"),
        ({"w1uflags": pa.array([1.0, 2.0, 3.5], pa.float64())}, r"source\.w1uflags: expected int64, got double"),
        ({"ra": [1.0, float("nan"), 2.0]}, r"source: row 1 has no finite ra/dec"),
    ],
)
def test_source_violations(lake: Lake, change: dict[str, object], message: str) -> None:
    rows = _rows() | change
    with pytest.raises(ValidationError, match=message):
        lake.write("source", rows)
    assert (lake.version == 0 and "source" not in lake.info()["tables"]) or lake.info()["tables"]["source"]["rows"] == 0


def test_flag_values_beyond_64_bits(lake: Lake) -> None:
    with pytest.raises(ValidationError, match="64 bits"):
        lake.write("source", _rows(2) | {"w1uflags": [1, 2**64]})
    lake.write("source", _rows(2) | {"w1uflags": np.array([2**63, 1], dtype=np.uint64)})
    assert lake.sql("SELECT w1uflags FROM source ORDER BY sdss_id").column(0).to_pylist() == [-(2**63), 1]


def test_spectrum_shape_and_position_errors(lake: Lake) -> None:
    lake.write("source", _rows())
    bad = {
        "sdss_id": [1],
        "release": ["x"],
        "apred": ["x"],
        "apstar": ["x"],
        "telescope": ["apo25m"],
        "obj": ["a"],
        "flux": np.ones((1, 100), np.float32),
        "ivar": np.ones((1, 8575), np.float32),
        "pixel_flags": np.zeros((1, 8575), np.int32),
    }
    with pytest.raises(ValidationError, match=r"apogee_star\.flux: row 0 has 100 pixels, expected 8575"):
        lake.write("apogee_star", bad)
    holes = pa.array([[1.0] * 8574 + [None]], pa.list_(pa.float32()))
    with pytest.raises(ValidationError, match=r"apogee_star\.flux: row 0 has null pixels"):
        lake.write("apogee_star", bad | {"flux": holes})
    orphan = bad | {"flux": np.ones((1, 8575), np.float32), "sdss_id": [999]}
    with pytest.raises(ValidationError, match=r"apogee_star: row 0 .*999.* write its source first"):
        lake.write("apogee_star", orphan)
    assert lake.version == 1


def test_missing_required_and_duplicate_keys(lake: Lake) -> None:
    with pytest.raises(ValidationError, match="missing required column 'v_astra'"):
        lake.write("aspcap", {"spectrum_pk": [1]})
    src = S.sources(5, seed=1)
    lake.write("source", src)
    moved = src.set_column(src.column_names.index("ra"), "ra", pc.add(src.column("ra"), 1.0))
    with pytest.raises(ValidationError, match=r"already exist.*use upsert"):
        lake.write("source", moved)
    assert lake.write("source", src) == lake.version == 1  # the same rows again (a retry): nothing to do
    batch = next(S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=1))
    lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()
    res = S.results("aspcap", np.r_[pks, pks[:1]])
    with pytest.raises(ValidationError, match="appears more than once"):
        lake.write("aspcap", res)
    assert lake.info()["tables"].get("aspcap", {"rows": 0})["rows"] == 0
