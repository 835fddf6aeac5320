"""The streaming FITS writer: values and null fills as astropy reads them, checksums astropy verifies."""

from __future__ import annotations

import datetime as dt
import itertools
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
from astropy.io import fits
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake.products.fits_writer import BinTableWriter, FitsColumn, OnesComplementSum, encode_checksum, write_primary

STAMP = "2026-01-02T03:04:05"


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=6))
def test_checksum_is_the_same_however_the_stream_is_cut(data: bytes, cuts: list[int]) -> None:
    whole = OnesComplementSum()
    whole.update(data.ljust(-(-len(data) // 4) * 4, b"\0"))
    pieces = OnesComplementSum()
    edges = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    for a, b in itertools.pairwise(edges):
        pieces.update(data[a:b])
    assert pieces.value == whole.value
    # independent reference: the 32-bit ones' complement sum of big-endian words, folded
    words = np.frombuffer(data.ljust(-(-len(data) // 4) * 4, b"\0"), ">u4").astype(object)
    total = int(sum(words))
    while total >> 32:
        total = (total & 0xFFFFFFFF) + (total >> 32)
    assert whole.value == total


@settings(max_examples=200, deadline=None)
@given(value=st.integers(0, 2**32 - 1))
def test_checksum_encoding_matches_astropys(value: int) -> None:
    # astropy's (private) encoder of the FITS standard's appendix J algorithm, as an independent reference
    assert encode_checksum(value) == fits.PrimaryHDU()._char_encode(~value & 0xFFFFFFFF)


def test_values_fills_and_checksums_as_astropy_reads_them(tmp_path: Path) -> None:
    t0 = dt.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=dt.UTC)
    table = pa.table(
        {
            "k": pa.array([1, None, -(2**62)], pa.int64()),
            "flags": pa.array([5, None, 0], pa.int64()),
            "e": pa.array([1.5, None, np.nan], pa.float32()),
            "d": pa.array([1e300, 2.0, None], pa.float64()),
            "s": pa.array(["ab", None, "xyz"]),
            "b": pa.array([True, None, False]),
            "bits": pa.array([b"\x05", None, b"\x00\x80"], pa.binary()),
            "arr": pa.array([[1.0, 2.0], [3.0], None], pa.list_(pa.float32())),
            "t": pa.array([t0, None, t0], pa.timestamp("us", tz="UTC")),
        }
    )
    cols = [
        FitsColumn("k", "K", fill=-1, unit="", description="an identifier"),
        FitsColumn("flags", "K", fill=0),
        FitsColumn("e", "E", unit="km/s", description="a float " + "with a long description " * 4, fill=np.nan),
        FitsColumn("d", "D", fill=np.nan),
        FitsColumn("s", "A", 3),
        FitsColumn("b", "L"),
        FitsColumn("bits", "L", 16),
        FitsColumn("arr", "E", 2),
        FitsColumn("t", "A", 26),
    ]
    path = tmp_path / "t.fits"
    with open(path, "wb") as fh:
        write_primary(fh, [("V_ASTRA", "0.8.0", "Astra version"), ("CHECKSUM", "", ""), ("DATASUM", "", "")], STAMP)
        w = BinTableWriter(fh, cols, 3, [("EXTNAME", "X", ""), ("CHECKSUM", "", ""), ("DATASUM", "", "")], STAMP)
        for batch in table.to_batches(max_chunksize=2):
            w.write(batch)
        w.close()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hdul = fits.open(path, checksum=True)  # warns if a checksum does not verify
    with hdul:
        d = hdul[1].data
        assert d["k"].tolist() == [1, -1, -(2**62)] and d["flags"].tolist() == [5, 0, 0]
        assert d["e"][0] == 1.5 and np.isnan(d["e"][1:]).all()
        assert d["d"][0] == 1e300 and np.isnan(d["d"][2])
        assert d["s"].tolist() == ["ab", "", "xyz"] and d["b"].tolist() == [True, False, False]
        assert np.flatnonzero(d["bits"][0]).tolist() == [0, 2] and np.flatnonzero(d["bits"][2]).tolist() == [15]
        assert (
            d["arr"][0].tolist() == [1.0, 2.0]
            and d["arr"][1][0] == 3.0
            and np.isnan(d["arr"][1][1])
            and np.isnan(d["arr"][2]).all()
        )
        assert d["t"].tolist() == ["2024-05-06T07:08:09.123456", "", "2024-05-06T07:08:09.123456"]
        assert hdul[1].header["TCOMM3"].startswith("a float with") and hdul[1].header["TUNIT3"] == "km/s"
        assert hdul[1].header["CHECKSUM"] and hdul[1].header.comments["CHECKSUM"] == f"HDU checksum updated {STAMP}"
        assert hdul[0].header["DATASUM"] == "0"
