"""The full-scan path: Lake.spectra_batches returns every selected spectrum exactly once, equal to SQL."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from astra_lake import Lake
from astra_lake.errors import InvalidArgumentError
from astra_lake.ingest import synthetic as S

PIXELS = ("flux", "ivar", "pixel_flags")


def _by_pk(lake: Lake, where: str = "true") -> tuple[np.ndarray, np.ndarray]:
    rows = lake.sql(f"SELECT spectrum_pk, flux FROM apogee_star WHERE {where} ORDER BY spectrum_pk")
    flux = np.asarray(rows.column("flux").combine_chunks().flatten().to_numpy(), np.float32).reshape(len(rows), -1)
    return rows.column("spectrum_pk").to_numpy(), flux


@pytest.mark.parametrize(("batch_rows", "threads"), [(1, 1), (7, 2), (1024, 3)])
def test_batches_hold_every_spectrum_once(populated: Lake, batch_rows: int, threads: int) -> None:
    pks, flux = _by_pk(populated)
    blocks = list(populated.spectra_batches("apogee_star", batch_rows=batch_rows, threads=threads))
    assert [len(b) for b in blocks[:-1]] == [batch_rows] * (len(blocks) - 1) and 0 < len(blocks[-1]) <= batch_rows
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
        assert len(block) == 1
        break  # the generator closes its thread pool without reading the rest


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"table": "aspcap"}, "aspcap is a pipeline table"),
        ({"columns": ["teff"]}, "apogee_star has no column(s) teff; its columns are _healpix_29, "),
        ({"where": "no_such_column > 1"}, "where clause failed on apogee_star"),
        ({"batch_rows": 0}, "batch_rows must be an integer >= 1, got 0"),
        ({"batch_rows": 2.5}, "batch_rows must be an integer >= 1, got 2.5"),
        ({"threads": 0}, "threads must be an integer >= 1"),
        ({"where": "snr > 1", "pks": pa.array([1])}, "give where or pks, not both"),
    ],
)
def test_bad_requests_are_named(populated: Lake, kwargs: dict, message: str) -> None:
    table = kwargs.pop("table", "apogee_star")
    if "pks" in kwargs:  # not on the facade: the pipeline-side entry point
        from astra_lake.query.batches import spectra_batches

        with pytest.raises(InvalidArgumentError, match=message):
            spectra_batches(populated.snapshot(), table, **kwargs)
        return
    with pytest.raises(InvalidArgumentError, match=message.replace("(", r"\(").replace(")", r"\)")):
        populated.spectra_batches(table, **kwargs)  # raised on the call, not on the first block


@pytest.mark.parametrize("where", [None, "snr > 20"])
def test_blocks_fill_across_files_and_row_groups(populated: Lake, where: str | None) -> None:
    """Every block but the last holds exactly batch_rows spectra, whatever the files' sizes (the lake
    here has many files of a few rows each), with or without a where clause."""
    sql = f"SELECT spectrum_pk, flux, ivar, pixel_flags FROM apogee_star WHERE {where or 'true'} ORDER BY spectrum_pk"
    rows = populated.sql(sql)
    want = {c: np.asarray(rows.column(c).combine_chunks().flatten()).reshape(len(rows), -1) for c in PIXELS}
    assert len(populated.snapshot().files("apogee_star")) > 1
    for batch_rows, threads in ((1, 2), (7, 1), (16, 2), (17, 3), (50, 2), (130, 2)):
        blocks = list(populated.spectra_batches("apogee_star", where=where, batch_rows=batch_rows, threads=threads))
        sizes = [len(b) for b in blocks]
        assert sum(sizes) == len(rows) and all(s == batch_rows for s in sizes[:-1]) and 0 < sizes[-1] <= batch_rows
        got_pk = np.concatenate([b.meta.column("spectrum_pk").to_numpy() for b in blocks])
        order = np.argsort(got_pk)
        np.testing.assert_array_equal(got_pk[order], rows.column("spectrum_pk").to_numpy())
        for name in PIXELS:
            np.testing.assert_array_equal(np.concatenate([getattr(b, name) for b in blocks])[order], want[name])


def test_a_foreign_file_is_read_through_pyarrow(populated: Lake, tmp_path: Path) -> None:
    """A data file without the lake's width metadata (another writer's) gives the same spectra."""
    from astra_lake.query.spectra import Piece, open_file, read_pieces

    path = populated.snapshot().paths("apogee_star")[0]
    plain = tmp_path / "plain.parquet"
    rows = pq.read_table(path)
    pq.write_table(rows.replace_schema_metadata(None), plain, row_group_size=3)
    tbl = populated.catalog.schema.table("apogee_star")
    f = open_file(str(plain))
    picked = np.arange(len(rows))[::2]
    for piece in (f.piece(np.arange(len(rows))), f.piece(picked)):
        got = read_pieces(tbl, [piece])
        want = rows.take(piece.rows) if piece.rows is not None else rows
        np.testing.assert_array_equal(got.flux.reshape(-1), np.asarray(want.column("flux").combine_chunks().flatten()))
        assert got.meta.column("spectrum_pk").equals(want.column("spectrum_pk"))
    assert Piece(str(plain), [0], None) == f.piece(np.arange(min(3, len(rows))))


def test_a_null_pixel_array_reads_as_nan(populated: Lake, tmp_path: Path) -> None:
    """A file holding a null flux array (nullable column) keeps rows aligned: that row reads as NaN."""
    from astra_lake.query.spectra import open_file, read_pieces

    rows = pq.read_table(max(populated.snapshot().paths("apogee_star"), key=lambda p: pq.read_metadata(p).num_rows))
    assert len(rows) >= 2
    flux = rows.column("flux").combine_chunks()
    nulled = pa.ListArray.from_arrays(flux.offsets, flux.values, type=flux.type, mask=pa.array(np.arange(len(rows)) == 1))
    path = tmp_path / "nulls.parquet"
    pq.write_table(rows.set_column(rows.column_names.index("flux"), "flux", nulled), path)
    f = open_file(str(path))
    got = read_pieces(populated.catalog.schema.table("apogee_star"), [f.piece(np.arange(len(rows)))])
    assert np.all(np.isnan(got.flux[1]))
    want = np.asarray(flux.flatten()).reshape(len(rows), -1)
    np.testing.assert_array_equal(np.delete(got.flux, 1, axis=0), np.delete(want, 1, axis=0))
    np.testing.assert_array_equal(got.ivar.reshape(-1), np.asarray(rows.column("ivar").combine_chunks().flatten()))
