"""Corrupt real files are skipped with a one-line reason in ingest_errors; nothing stored changes."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from astra_lake import Lake
from astra_lake.cli import app
from tests.ingest.conftest import APSTAR, APVISIT, SPEC, run


def _truncate(src: Path, dst: Path) -> None:
    dst.write_bytes(src.read_bytes()[: src.stat().st_size // 3])


def _missing_hdu(src: Path, dst: Path) -> None:
    with fits.open(src) as h:
        fits.HDUList(h[:3]).writeto(dst)


def _wrong_naxis(src: Path, dst: Path) -> None:
    with fits.open(src) as h:
        h[1].data = h[1].data[:, :4000]
        h.writeto(dst)


def _nan_ivar(src: Path, dst: Path) -> None:
    with fits.open(src) as h:
        h[1].data["ivar"][10] = np.nan
        h.writeto(dst)


def _negative_ivar(src: Path, dst: Path) -> None:
    with fits.open(src) as h:
        h[1].data["ivar"][10] = -1.0
        h.writeto(dst)


def _unknown(src: Path, dst: Path) -> None:
    fits.HDUList([fits.PrimaryHDU(np.zeros((3, 3)))]).writeto(dst)


CASES = [
    (APSTAR, _truncate, "truncated?"),
    (APSTAR, _missing_hdu, "apStar files have at least 10 HDUs, this one 3"),
    (APSTAR, _wrong_naxis, "4000 pixels per row"),
    (SPEC, _nan_ivar, "non-finite"),
    (SPEC, _negative_ivar, "negative at pixel 10"),
    (APVISIT, _unknown, "unknown layout"),
]


@pytest.mark.parametrize(("src", "corrupt", "reason"), CASES, ids=[c[1].__name__ for c in CASES])
def test_corrupt_file_is_skipped_with_reason(
    lake: Lake, files: Path, tmp_path: Path, src: Path, corrupt: object, reason: str
) -> None:
    run(lake, files)
    before = {t: v["rows"] for t, v in lake.info()["tables"].items()}
    bad = files / f"bad-{src.name}"
    corrupt(src, bad)  # type: ignore[operator]
    s = run(lake, files)
    assert s.failed == 1 and s.skipped == 3 and reason in s.errors[0] and str(bad) in s.errors[0]
    assert "\n" not in s.errors[0]
    after = {t: v["rows"] for t, v in lake.info()["tables"].items()}
    assert {t: n for t, n in after.items() if not t.startswith("ingest_")} == {
        t: n for t, n in before.items() if not t.startswith("ingest_")
    }
    err = lake.sql("SELECT path, error, attempt FROM ingest_errors").to_pylist()
    assert err[0]["path"] == str(bad) and reason in err[0]["error"] and err[0]["attempt"] == 1
    run(lake, files)  # the failure is retried (and recorded again)
    assert lake.sql("SELECT max(attempt) FROM ingest_errors").column(0)[0].as_py() == 2


def test_cli_exit_code_and_summary(tmp_path: Path, files: Path) -> None:
    _truncate(APSTAR, files / "broken.fits")
    res = CliRunner().invoke(app, ["ingest", str(files), "--lake", str(tmp_path / "lk"), "--workers", "2", "--create"])
    assert res.exit_code == 1
    assert "files read 3, skipped 0, failed 1" in res.output and "broken.fits" in res.output
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "nowhere"), "--lake", str(tmp_path / "lk")])
    assert res.exit_code == 2 and "no such file" in res.output
    shutil.rmtree(files)
