"""Summary files read column by column: every value the lake stores equals what astropy reads from the
same file; mwmAllStar / mwmAllVisit land in their spectrum tables; large files stream in chunks."""

from __future__ import annotations

import datetime as dt
import gzip
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from astropy.io import fits

from astra_lake import Lake
from astra_lake.ingest import summary
from astra_lake.lake.conform import MANAGED, storage_schema
from astra_lake.schema.flags import from_signed32
from astra_lake.schema.loader import load_schema
from astra_lake.schema.versions import version_to_int
from tests.ingest.conftest import factory, run


def _expected(value: Any, arrow_type: pa.DataType) -> Any:
    """What the lake should hold for one FITS value (astropy's reading), independent of the reader."""
    if isinstance(value, bytes | str):
        text = (value.decode() if isinstance(value, bytes) else value).rstrip()
        if pa.types.is_integer(arrow_type):  # v_astra "X.Y.Z"
            return version_to_int(text)
        if pa.types.is_timestamp(arrow_type):
            return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC)
        return text
    if isinstance(value, np.ndarray):
        if pa.types.is_binary(arrow_type):
            return np.packbits(value.astype(bool), bitorder="little").tobytes()
        return [float(v) for v in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.floating):
        return float(np.float32(value)) if arrow_type == pa.float32() else float(value)
    return int(value)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (np.isnan(a) and np.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def _check_table(lake: Lake, path: Path, hdu: int, table: str, key: str, ignore: frozenset[str] = frozenset()) -> int:
    """Every column of ``table`` that HDU ``hdu`` has: lake value == astropy value, row by row (matched
    on ``key``). Returns how many values were compared."""
    tbl = load_schema().table(table)
    types = storage_schema(tbl)
    stored = {r[key]: r for r in lake.sql(f"SELECT * FROM {table}").to_pylist()}
    signed32 = {fc.name for fc in tbl.flag_columns if fc.signed32_source}
    compared = 0
    with fits.open(path) as h:
        data = h[hdu].data
        names = {n.lower(): n for n in data.columns.names}
        columns = {
            c.name: data[names[c.name]] for c in tbl.columns if c.name in names and c.name not in (MANAGED - {"sdss_id"}) | ignore
        }
        for i in range(len(data)):
            row = stored[_expected(columns[key][i], types.field(key).type)]
            for name, values in columns.items():
                want = _expected(values[i], types.field(name).type)
                if name in signed32:
                    want = int(from_signed32([want])[0])
                assert _same(row[name], want), (table, name, i, row[name], want)
                compared += 1
    return compared


def test_every_column_equals_astropys_reading(lake: Lake, tmp_path: Path) -> None:
    n = 4
    rng = np.random.default_rng(1)
    values = {
        "sdss_id": np.array([101, 102, 103, 104]),
        "obj": np.array(["o1", "o2", "o3", "o4"]),
        "release": np.array(["dr19"] * n),
        "apred": np.array(["1.3"] * n),
        "apstar": np.array(["stars"] * n),
        "telescope": np.array(["apo25m", "lco25m", "apo25m", "apo1m"]),
        "sdss4_apogee_target1_flags": np.array([-(2**31), 0, 5, -1]),
        "result_flags": np.array([0, 67108896, 2**62, 32], np.int64),
        "teff": rng.uniform(3000, 7000, n).astype(np.float32),
    }
    path = factory().make(
        "astraAllStarASPCAP", tmp_path / "astraAllStarASPCAP.fits", {"HDU2": n}, values={"HDU2": values}, seed=3
    )
    s = run(lake, path)
    assert s.failed == 0, s.errors
    assert s.rows == {"source": n, "apogee_star": n, "aspcap": n}
    compared = _check_table(lake, path, 2, "source", "sdss_id")
    compared += _check_table(lake, path, 2, "apogee_star", "obj")
    # v_astra of results is the header's V_ASTRA (the file's column is the spectrum's)
    compared += _check_table(lake, path, 2, "aspcap", "sdss_id", ignore={"v_astra"})
    assert compared > 400
    linked = lake.sql(
        "SELECT a.sdss_id, s.obj, s.sdss_id AS s_id FROM aspcap a JOIN apogee_star s USING (spectrum_pk)"
    ).to_pylist()
    assert sorted((r["sdss_id"], r["obj"]) for r in linked) == list(
        zip(values["sdss_id"].tolist(), values["obj"].tolist(), strict=True)
    )
    assert all(r["sdss_id"] == r["s_id"] for r in linked)


@pytest.mark.parametrize("kind", ["mwmAllStar", "mwmAllVisit"])
def test_mwm_all_files_fill_their_spectrum_tables(lake: Lake, tmp_path: Path, kind: str) -> None:
    boss, apogee = summary.SPECTRA[kind]
    path = tmp_path / f"{kind}-0.6.0.fits"
    factory().make_streamed(kind, path, {1: 3, 2: 5}, seed=2)
    s = run(lake, path)
    assert s.failed == 0, s.errors
    assert s.rows == {"source": 8, boss: 3, apogee: 5}
    key = "sdss_id"
    assert _check_table(lake, path, 1, boss, key) > 50
    assert _check_table(lake, path, 2, apogee, key) > 50
    assert _check_table(lake, path, 2, "source", key) > 50
    pixels = lake.sql(f"SELECT count(*) FROM {apogee} WHERE flux IS NULL").column(0)[0].as_py()
    assert pixels == 5  # summary files carry no pixels


def test_large_files_stream_in_chunks_and_gzip(lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 7 rows, writer parts of 20: a 50-row HDU in 8 chunks and 3 parts, every value as astropy
    reads it; a gzip copy of the file gives the same lake."""
    path = factory().make_streamed("astraAllStarASPCAP", tmp_path / "big.fits", {1: 5, 2: 50}, seed=5)
    with fits.open(path) as h:
        monkeypatch.setattr(summary, "CHUNK_BYTES", 7 * h[2].header["NAXIS1"])
        monkeypatch.setattr(summary, "PART_BYTES", 20 * h[2].header["NAXIS1"])
    monkeypatch.setattr(summary, "MAX_PARTS", 50)
    s = run(lake, path)
    assert s.failed == 0, s.errors
    assert s.rows == {"source": 55, "boss_combined": 5, "apogee_star": 50, "aspcap": 55}
    assert _check_table(lake, path, 2, "aspcap", "sdss_id", ignore={"v_astra"}) > 50 * 100
    pairs = lake.sql(
        "SELECT a.sdss_id, s.obj FROM aspcap a JOIN apogee_star s USING (spectrum_pk) ORDER BY a.sdss_id"
    ).to_pylist()
    assert [(r["sdss_id"], r["obj"]) for r in pairs] == [(i, f"2M{i}") for i in range(2 * 10**8 + 1, 2 * 10**8 + 51)]
    other = Lake.init(tmp_path / "gz")
    packed = tmp_path / "big.fits.gz"
    with open(path, "rb") as src, gzip.open(packed, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert run(other, packed).rows == s.rows
    q = "SELECT sdss_id, teff, result_flags FROM aspcap ORDER BY sdss_id"
    assert other.sql(q).equals(lake.sql(q))


def test_a_summary_file_never_replaces_a_stored_spectrum_and_its_pixels(lake: Lake, tmp_path: Path) -> None:
    """A spectrum stored from its own file keeps its pixels; the summary's result links to it."""
    from astra_lake.ingest import synthetic as S

    src = S.sources(1, seed=1, first_sdss_id=777)
    lake.write("source", src)
    spectrum = next(S.spectra("apogee_star", np.array([777]), seed=2))
    keys = {"release": ["dr19"], "apred": ["1.3"], "apstar": ["stars"], "telescope": ["apo25m"], "obj": ["2M777"]}
    for k, v in keys.items():  # values that fit the datamodel's string widths
        spectrum = spectrum.set_column(spectrum.column_names.index(k), k, pa.array(v))
    lake.write("apogee_star", spectrum)
    before = lake.sql("SELECT spectrum_pk, snr, flux FROM apogee_star").to_pylist()
    values = {k: np.array(v) for k, v in keys.items()} | {"sdss_id": np.array([777])}
    path = factory().make("astraAllStarASPCAP", tmp_path / "s.fits", {"HDU2": 1}, values={"HDU2": values})
    s = run(lake, path)
    assert s.failed == 0, s.errors
    assert lake.sql("SELECT spectrum_pk, snr, flux FROM apogee_star").to_pylist() == before
    linked = lake.sql("SELECT a.spectrum_pk FROM aspcap a").column(0).to_pylist()
    assert linked == [before[0]["spectrum_pk"]]
