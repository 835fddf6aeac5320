"""Lake.apply streams a spectrum table through a kernel into a pixel table in one commit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from astra_lake import Lake
from astra_lake.errors import AstraLakeError
from astra_lake.ingest import synthetic as S
from astra_lake.kernels import APOGEE_GRID, chebyshev
from astra_lake.kernels.tasks import ChebyshevNormalize, MedianNormalize


def test_apply_writes_normalised_spectra(tmp_path: Path) -> None:
    lake = Lake.init(tmp_path / "lk")
    src = S.sources(60, seed=1)
    lake.write("source", src)
    for b in S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=2, batch=25):
        lake.write("apogee_star", b)
    before = lake.version
    lake.apply(ChebyshevNormalize(), table="apogee_star", output="normalized_apogee", where="snr > 40")
    assert lake.version == before + 1
    n_sel = lake.sql("SELECT count(*) FROM apogee_star WHERE snr > 40").column(0)[0].as_py()
    out = lake.sql(
        "SELECT n.spectrum_pk, n.flux, n.continuum, s.flux AS raw, s.ivar FROM normalized_apogee n "
        "JOIN apogee_star s USING (spectrum_pk) ORDER BY n.spectrum_pk"
    )
    assert out.num_rows == n_sel > 0
    row = out.to_pylist()[0]
    cont, nf, _ = chebyshev(APOGEE_GRID.wavelength, np.asarray(row["raw"])[None], np.asarray(row["ivar"])[None])
    assert np.allclose(np.asarray(row["continuum"]), cont[0], equal_nan=True) and np.allclose(np.asarray(row["flux"]), nf[0])
    # re-running the same method replaces; a second method adds rows
    lake.apply(ChebyshevNormalize(), table="apogee_star", output="normalized_apogee", where="snr > 40")
    lake.apply(MedianNormalize(), table="apogee_star", output="normalized_apogee", where="snr > 40")
    assert lake.sql("SELECT count(*) FROM normalized_apogee").column(0)[0].as_py() == 2 * n_sel
    with pytest.raises(AstraLakeError, match="not on the grid"):
        lake.apply(MedianNormalize(), table="apogee_star", output="normalized_boss")
    with pytest.raises(AstraLakeError, match="where clause failed"):
        lake.apply(MedianNormalize(), table="apogee_star", output="normalized_apogee", where="nonsense_column > 1")


def test_apply_over_a_wider_selection_adds_the_new_spectra_and_keeps_the_old_results(tmp_path: Path) -> None:
    """The README's pattern on the demo lake: ``snr > 100`` first, then ``snr > 50``: one batch holds
    spectra already normalised (kept task_pk and created) and new ones (fresh task_pk)."""
    lake = Lake.init(tmp_path / "lk")
    src = S.sources(40, seed=3)
    lake.write("source", src)
    lake.write("apogee_star", next(S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=4)))
    q = "SELECT spectrum_pk, task_pk, created, modified FROM normalized_apogee"
    lake.apply(ChebyshevNormalize(), table="apogee_star", output="normalized_apogee", where="snr > 100")
    first = {r["spectrum_pk"]: r for r in lake.sql(q).to_pylist()}
    lake.apply(ChebyshevNormalize(), table="apogee_star", output="normalized_apogee", where="snr > 50")
    second = {r["spectrum_pk"]: r for r in lake.sql(q).to_pylist()}
    wanted = set(lake.sql("SELECT spectrum_pk FROM apogee_star WHERE snr > 50").column(0).to_pylist())
    assert set(second) == wanted and 0 < len(first) < len(wanted)
    for pk, old in first.items():
        assert (second[pk]["task_pk"], second[pk]["created"]) == (old["task_pk"], old["created"])
        assert second[pk]["modified"] > old["modified"]
    new = [second[pk] for pk in wanted - set(first)]
    assert min(r["task_pk"] for r in new) > max(r["task_pk"] for r in first.values())
    assert all(r["created"] == r["modified"] for r in new)
