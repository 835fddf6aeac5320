from __future__ import annotations

from pathlib import Path

import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 sources, 6 APOGEE coadds (8575 px) and their ASPCAP results."""
    path = tmp_path_factory.mktemp("cli") / "lake"
    lake = Lake.init(path)
    src = S.sources(30, seed=11)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy()[:6], seed=12):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=13))
    return path


@pytest.fixture(autouse=True)
def no_user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $ASTRA_LAKE and an empty config folder, whatever the machine running the tests has."""
    monkeypatch.delenv("ASTRA_LAKE", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "astra-lake" / "config.toml"
