"""Release filters: excluded rows and columns never appear in any output format (FITS, Parquet, HATS)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.errors import ReleaseError
from astra_lake.products.filters import ReleaseFilter
from astra_lake.schema.flags import sdss5_target_bits
from astra_lake.schema.loader import load_schema
from astra_lake.schema.products import load_products
from tests.products.conftest import TAG, build_small_lake

_LAKES: dict[int, Lake] = {}
_ROOT = Path(tempfile.mkdtemp(prefix="astra-lake-filter-test-"))
OMITTABLE = [
    "source.tic_v8_id",
    "t_elapsed",
    "aspcap.raw_teff",
    "snr",
    "aspcap.result_flags",
    "boss_combined.xcsao_teff",
    "bossnet.teff",
]


def _lake(seed: int) -> Lake:
    if seed not in _LAKES:
        _LAKES[seed] = build_small_lake(_ROOT / f"lake{seed}", seed)
    return _LAKES[seed]


def _targets(lake: Lake) -> dict[int, set[int]]:
    """source_pk -> its targeting bits, decoded in Python (independently of the SQL the release uses)."""
    rows = lake.sql("SELECT source_pk, sdss5_target_flags FROM source", version=TAG).to_pylist()
    return {r["source_pk"]: set(sdss5_target_bits(r["sdss5_target_flags"]) or []) for r in rows}


@st.composite
def filters(draw: st.DrawFn) -> tuple[int, dict[str, Any]]:
    seed = draw(st.sampled_from([0, 1]))
    lake = _lake(seed)
    bits = sorted(set().union(*_targets(lake).values()))
    by_bit = {b.bit: b for b in load_schema().targeting}
    raw: dict[str, Any] = {}
    if draw(st.booleans()):
        raw["max_mjd"] = draw(st.integers(58900, 60100))
    raw["exclude_cartons"] = sorted({by_bit[b].name for b in draw(st.lists(st.sampled_from(bits), max_size=2))})
    raw["exclude_programs"] = sorted({by_bit[b].program for b in draw(st.lists(st.sampled_from(bits), max_size=1))})
    raw["omit_columns"] = draw(st.lists(st.sampled_from(OMITTABLE), max_size=3, unique=True))
    return seed, raw


def _excluded(lake: Lake, rf: ReleaseFilter) -> tuple[set[int], set[int]]:
    """(source_pks, spectrum_pks) the filter must keep out, computed from the lake in Python."""
    schema = load_schema()
    bits = {b.bit for b in schema.targeting if b.program in rf.exclude_programs or b.name in rf.exclude_cartons}
    sources = {pk for pk, has in _targets(lake).items() if has & bits}
    spectra: set[int] = set()
    for table, col in (("apogee_star", "max_mjd"), ("boss_combined", "max_mjd"), ("boss_rest_frame_visit", "mjd")):
        for r in lake.sql(f"SELECT spectrum_pk, source_pk, {col} AS mjd FROM {table}", version=TAG).to_pylist():
            if r["source_pk"] in sources or (rf.max_mjd is not None and r["mjd"] > rf.max_mjd):
                spectra.add(r["spectrum_pk"])
    return sources, spectra


def _omitted_names(rf: ReleaseFilter) -> dict[str, set[str]]:
    schema = load_schema()
    return {t: rf.omitted(schema, t) for t in schema.tables}


def _check_rows(where: str, cols: dict[str, np.ndarray], sources: set[int], spectra: set[int]) -> int:
    for name in ("source_pk", "source", "source_pk_id"):
        if name in cols:
            assert not set(cols[name].tolist()) & sources, f"{where}: excluded source in {name}"
    for name in ("spectrum_pk", "spectrum_pk_id", "drp_spectrum_pk"):
        if name in cols:
            assert not set(cols[name].tolist()) & spectra, f"{where}: excluded spectrum in {name}"
    return len(next(iter(cols.values()))) if cols else 0


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(case=filters())
def test_excluded_rows_and_columns_never_appear_in_any_format(case: tuple[int, dict[str, Any]]) -> None:
    seed, raw = case
    lake = _lake(seed)
    rf = ReleaseFilter.from_dict(raw)
    out = _ROOT / "out"
    shutil.rmtree(out, ignore_errors=True)
    manifest = lake.release("filtered", tag=TAG, out=out, release_filter=rf)
    assert manifest.filter == rf.as_dict()
    sources, spectra = _excluded(lake, rf)
    omitted = _omitted_names(rf)
    kept_rows = 0
    for f in manifest.files:
        path = out / f["path"]
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            name = f["path"].split("/")[1].removesuffix(".parquet")
            assert not set(table.column_names) & omitted[name], f["path"]
            kept_rows += _check_rows(
                f["path"], {c: table.column(c).to_numpy() for c in table.column_names if "pk" in c}, sources, spectra
            )
        elif path.suffix == ".fits":
            product = load_products()[path.name.split("-")[0]]
            with fits.open(path) as hdul:
                if "SDSS_ID" in hdul[0].header and hdul[0].header["SDSS_ID"] is not None:
                    pk = (
                        lake.sql(f"SELECT source_pk FROM source WHERE sdss_id = {hdul[0].header['SDSS_ID']}", version=TAG)
                        .column(0)[0]
                        .as_py()
                    )
                    assert pk not in sources, f["path"]
                for hdu, decl in zip(hdul[1:], product.hdus, strict=True):
                    names = set(hdu.columns.names)
                    for c in decl.columns:
                        if c.source and c.source.split(".", 1)[1] in omitted[c.source.split(".")[0]]:
                            assert c.name not in names, f"{f['path']}: {c.name} ({c.source}) was omitted"
                    ids = {
                        n: np.asarray(hdu.data[n])
                        for n in names
                        if n in ("source_pk", "source", "spectrum_pk", "spectrum_pk_id", "drp_spectrum_pk")
                    }
                    kept_rows += _check_rows(f["path"], ids, sources, spectra)
    assert kept_rows > 0 or sources or spectra


def test_filter_excludes_exactly_the_targeted_sources(tmp_path: Path) -> None:
    lake = _lake(0)
    bit = sorted(set().union(*_targets(lake).values()))[0]
    carton = next(b for b in load_schema().targeting if b.bit == bit)
    rf = ReleaseFilter.from_dict({"exclude_cartons": [carton.label]})
    lake.release("f", tag=TAG, out=tmp_path / "r", formats=["parquet"], release_filter=rf)
    kept = set(pq.read_table(tmp_path / "r" / "parquet" / "source.parquet").column("source_pk").to_pylist())
    targets = _targets(lake)
    assert kept == {pk for pk, bits in targets.items() if bit not in bits} and len(kept) < len(targets)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"max_mjd": "soon"}, "max_mjd must be an integer MJD"),
        ({"exclude_programs": ["no_such_program"]}, "unknown program 'no_such_program'"),
        ({"exclude_cartons": "mwm_snc_100pc"}, "exclude_cartons must be a list"),
        ({"omit_columns": ["aspcap.no_such_column"]}, "unknown column 'aspcap.no_such_column'"),
        ({"omit_columns": ["source.ra"]}, "cannot omit 'source.ra'"),
        ({"cutoff": 1}, "unknown key"),
    ],
)
def test_bad_filters_are_one_line_errors(raw: dict[str, Any], message: str, tmp_path: Path) -> None:
    path = tmp_path / "filter.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ReleaseError, match=message) as err:
        ReleaseFilter.read(path).validate(load_schema())
    assert "\n" not in str(err.value) and str(path) in str(err.value)
