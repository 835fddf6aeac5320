"""The full-scan path: Lake.spectra_batches returns every selected spectrum exactly once, equal to SQL."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.errors import AstraLakeError
from astra_lake.ingest import synthetic as S


def _by_pk(lake: Lake, where: str = "true") -> tuple[np.ndarray, np.ndarray]:
    rows = lake.sql(f"SELECT spectrum_pk, flux FROM apogee_star WHERE {where} ORDER BY spectrum_pk")
    flux = np.asarray(rows.column("flux").combine_chunks().flatten().to_numpy(), np.float32).reshape(len(rows), -1)
    return rows.column("spectrum_pk").to_numpy(), flux


@pytest.mark.parametrize(("batch_rows", "threads"), [(1, 1), (7, 2), (1024, 3)])
def test_batches_hold_every_spectrum_once(populated: Lake, batch_rows: int, threads: int) -> None:
    pks, flux = _by_pk(populated)
    blocks = list(populated.spectra_batches("apogee_star", batch_rows=batch_rows, threads=threads))
    groups = max(populated.catalog.schema.table("apogee_star").row_group_rows, batch_rows)
    assert all(0 < len(b) <= groups for b in blocks)
    got_pk = np.concatenate([b.meta.column("spectrum_pk").to_numpy() for b in blocks])
    got_flux = np.concatenate([b.flux for b in blocks])
    order = np.argsort(got_pk)
    np.testing.assert_array_equal(got_pk[order], pks)
    np.testing.assert_array_equal(got_flux[order], flux)
    assert blocks[0].meta.column_names == ["spectrum_pk", "source_pk", "sdss_id", "_healpix_29"]
    assert blocks[0].flux.shape[1] == blocks[0].ivar.shape[1] == blocks[0].pixel_flags.shape[1] == 8575


def test_where_selects_what_sql_selects(populated: Lake) -> None:
    pks, flux = _by_pk(populated, "snr > 60")
    assert 0 < len(pks) < 120
    blocks = list(populated.spectra_batches("apogee_star", where="snr > 60", columns=["snr"]))
    got = pa.concat_tables([b.meta for b in blocks])
    assert np.all(got.column("snr").to_numpy() > 60)
    order = np.argsort(got.column("spectrum_pk").to_numpy())
    np.testing.assert_array_equal(got.column("spectrum_pk").to_numpy()[order], pks)
    np.testing.assert_array_equal(np.concatenate([b.flux for b in blocks])[order], flux)
    assert list(populated.spectra_batches("apogee_star", where="snr > 1e9")) == []


def test_a_pinned_version_and_an_early_stop(populated: Lake) -> None:
    before = populated.version
    ids = populated.sql("SELECT sdss_id FROM source ORDER BY sdss_id DESC LIMIT 5").column(0).to_numpy()
    for batch in S.spectra("apogee_star", ids, seed=9):
        populated.write("apogee_star", batch)
    assert sum(len(b) for b in populated.spectra_batches("apogee_star", version=before)) == 120
    assert sum(len(b) for b in populated.spectra_batches("apogee_star")) == 125
    for block in populated.spectra_batches("apogee_star", batch_rows=1):
        assert 0 < len(block) <= populated.catalog.schema.table("apogee_star").row_group_rows
        break  # the generator closes its thread pool without reading the rest


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "aspcap"}, "aspcap is a pipeline table"),
        ({"columns": ["teff"]}, "apogee_star has no column(s) teff"),
        ({"where": "no_such_column > 1"}, "where clause failed on apogee_star"),
        ({"batch_rows": 0}, "batch_rows must be >= 1"),
    ],
)
def test_bad_requests_are_named(populated: Lake, kwargs: dict, message: str) -> None:
    table = kwargs.pop("table", "apogee_star")
    with pytest.raises(AstraLakeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        populated.spectra_batches(table, **kwargs)  # raised on the call, not on the first block
