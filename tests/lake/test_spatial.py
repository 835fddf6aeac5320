"""Cone search prunes partitions and agrees with a brute-force angular cut."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.errors import InvalidArgumentError
from astra_lake.ingest import synthetic as S
from astra_lake.lake.healpix import angular_separation_deg


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    lake = Lake.init(tmp_path_factory.mktemp("cone") / "lake")
    lake.write("source", S.sources(20, seed=3))
    return lake


def test_cone_matches_brute_force(populated: Lake) -> None:
    src = populated.sql("SELECT sdss_id, ra, dec FROM source")
    ra, dec = src.column("ra").to_numpy(), src.column("dec").to_numpy()
    centre_ra, centre_dec = float(ra[7]), float(dec[7])
    for radius in (0.5, 3.0, 20.0):
        truth = set(src.column("sdss_id").to_numpy()[angular_separation_deg(ra, dec, centre_ra, centre_dec) <= radius])
        got = populated.cone(centre_ra, centre_dec, radius, columns=["sdss_id"])
        assert set(got.column("sdss_id").to_pylist()) == truth
        assert np.all(got.column("separation_deg").to_numpy() <= radius)


def test_hats_sidecars_are_written(populated: Lake) -> None:
    root = populated.path / "aspcap"
    props = dict(line.split("=", 1) for line in (root / "hats.properties").read_text().splitlines())
    assert props["hats_col_healpix"] == "_healpix_29" and props["hats_npix_suffix"] == "/" and props["hats_nrows"] == "120"
    leaves = (root / "partition_info.csv").read_text().splitlines()[1:]
    for line in leaves:
        order, npix = map(int, line.split(","))
        assert (root / "dataset" / f"Norder={order}" / f"Dir={npix // 10000 * 10000}" / f"Npix={npix}").is_dir()


@settings(max_examples=200, deadline=None)
@given(
    h=st.lists(st.integers(0, 1000), min_size=1, max_size=200),
    group=st.integers(1, 20),
    starts=st.lists(st.integers(0, 990), min_size=1, max_size=4, unique=True),
    width=st.integers(1, 40),
)
def test_row_groups_found_from_the_cached_healpix_column(h: list[int], group: int, starts: list[int], width: int) -> None:
    """A lookup decodes exactly the row groups holding a row in the ranges, sorted file or not."""
    from astra_lake.lake.healpix import inside
    from astra_lake.query.spectra import groups_in

    lo = np.sort(np.array(starts, dtype=np.int64))
    hi = np.minimum(lo + width, np.r_[lo[1:], 10**6])  # disjoint, sorted, half-open
    ranges = np.stack([lo, hi], axis=1)
    group_starts = np.arange(0, len(h), group, dtype=np.int64)
    for values, ordered in ((np.sort(np.array(h, dtype=np.int64)), True), (np.array(h, dtype=np.int64), False)):
        want = np.unique(np.searchsorted(group_starts, np.flatnonzero(inside(ranges, values)), side="right") - 1)
        got = groups_in(values, group_starts, ordered, ranges)
        assert np.array_equal(got, want)


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((10.0, 5.0, 1.0), {"columns": ["x"]}, "source has no column.s. x; its columns are _healpix_29, source_pk, "),
        ((10.0, 5.0, -1.0), {}, r"cone on source: radius_deg must be a number in \[0, 180\] degrees, got -1.0"),
        ((10.0, 95.0, 1.0), {}, r"dec must be a number in \[-90, 90\] degrees, got 95.0"),
        ((float("nan"), 5.0, 1.0), {}, "ra must be a number"),
        ((10.0, 5.0, "1"), {}, "radius_deg must be a number"),
    ],
)
def test_bad_cone_arguments_are_named(sources: Lake, args: tuple, kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidArgumentError, match=message) as err:
        sources.cone(*args, **kwargs)
    assert "\n" not in str(err.value)
