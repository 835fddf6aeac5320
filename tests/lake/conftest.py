from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    return Lake.init(tmp_path / "lake")


@pytest.fixture()
def populated(lake: Lake) -> Lake:
    """300 sources, 120 APOGEE coadds, ASPCAP and AstroNN results."""
    src = S.sources(300, seed=3)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy()[:120], seed=4):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=5))
    lake.upsert("astronn", S.results("astronn", pks, seed=6))
    return lake


def column(tbl: pa.Table, name: str) -> np.ndarray:
    return tbl.column(name).to_numpy(zero_copy_only=False)
