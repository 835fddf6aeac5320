from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path
from types import ModuleType

import pytest

from astra_lake import Lake
from astra_lake.ingest.runner import Ingestor, Summary, find_files

DATA = Path(__file__).resolve().parent.parent / "data"
APSTAR = DATA / "fixtures" / "apStar-dr17-2M17335483-2753043.fits"
APVISIT = DATA / "fixtures" / "apVisit-r13-5095-55844-128.fits"
SPEC = DATA / "fixtures" / "spec-3586-55181-0500.fits"


def factory() -> ModuleType:
    spec = importlib.util.spec_from_file_location("fits_factory", DATA / "fits_factory.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def lake(tmp_path: Path) -> Lake:
    return Lake.init(tmp_path / "lake")


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    """A folder with copies of the three real fixtures (writable, so tests can corrupt copies)."""
    folder = tmp_path / "in"
    folder.mkdir()
    for f in (APSTAR, APVISIT, SPEC):
        shutil.copy(f, folder / f.name)
        (folder / f.name).chmod(0o644)
    return folder


def run(lake: Lake, *paths: Path, workers: int = 1, fmt: str | None = None) -> Summary:
    return Ingestor(lake.catalog, workers=workers, fmt=fmt).run(find_files(paths))
