"""A failure stays inside its file: whatever fails while reading or writing a file's rows is one
ingest_errors row naming file, HDU, row and column; the other files are ingested; nothing of the failed
file is written. Also: truncated files, FIFOs, broken links and unlistable folders are failures."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from typer.testing import CliRunner

from astra_lake import Lake
from astra_lake.cli import app
from astra_lake.ingest.inputs import scan_inputs
from astra_lake.ingest.runner import Ingestor
from tests.ingest.conftest import APSTAR, APVISIT, SPEC, factory, run


def _rows(lake: Lake, table: str) -> int:
    return lake.info()["tables"].get(table, {"rows": 0})["rows"]


def _errors(lake: Lake) -> list[dict[str, object]]:
    return lake.sql("SELECT path, error, hdu, hdu_row, column_name FROM ingest_errors ORDER BY path").to_pylist()


def test_a_file_contradicting_the_lake_is_left_out_and_the_rest_of_its_batch_is_ingested(tmp_path: Path) -> None:
    """An apStar re-issued with another SDSS_ID for a spectrum the lake holds is refused (a spectrum's
    source does not change); the apVisit and BOSS files read in the same batch are ingested."""
    folder = tmp_path / "in"
    folder.mkdir()
    star = folder / APSTAR.name
    shutil.copy(APSTAR, star)
    star.chmod(0o644)
    with fits.open(star, mode="update") as h:
        h[0].header["SDSS_ID"] = 5
    lake_path = tmp_path / "lk"
    assert CliRunner().invoke(app, ["ingest", str(folder), "--lake", str(lake_path), "--create"]).exit_code == 0
    lake = Lake(lake_path)
    before = lake.sql("SELECT spectrum_pk, sdss_id, snr FROM apogee_star").to_pylist()
    sources = _rows(lake, "source")
    with fits.open(star, mode="update") as h:
        h[0].header["SDSS_ID"] = 6  # the file now says the same spectrum belongs to another source
        h[0].header["SNR"] = 1.5
    for f in (APVISIT, SPEC):
        shutil.copy(f, folder / f.name)
    res = CliRunner().invoke(app, ["ingest", str(folder), "--lake", str(lake_path)])
    assert res.exit_code == 1, res.output
    assert "files read 2, skipped 0, failed 1" in res.output
    (err,) = _errors(lake)
    assert err["path"] == str(star) and (err["hdu"], err["hdu_row"], err["column_name"]) == (1, 0, "sdss_id")
    assert "HDU 1, row 0" in str(err["error"]) and "sdss_id=6" in str(err["error"]) and "sdss_id=5" in str(err["error"])
    assert lake.sql("SELECT spectrum_pk, sdss_id, snr FROM apogee_star").to_pylist() == before  # nothing of it written
    assert lake.sql("SELECT count(*) FROM source WHERE sdss_id = 6").column(0)[0].as_py() == 0
    assert _rows(lake, "source") == sources + 2 and _rows(lake, "apogee_visit") == 1 and _rows(lake, "boss_visit") == 1
    paths = set(lake.sql("SELECT path FROM ingest_files").column(0).to_pylist())
    assert str(folder / APVISIT.name) in paths and str(folder / SPEC.name) in paths


def _summary(tmp_path: Path, name: str, ids: list[int], objs: list[str], **extra: np.ndarray) -> Path:
    n = len(ids)
    values = {
        "sdss_id": np.array(ids),
        "obj": np.array(objs),
        "release": np.array(["dr19"] * n),
        "apred": np.array(["1.3"] * n),
        "apstar": np.array(["stars"] * n),
        "telescope": np.array(["apo25m"] * n),
        "ra": np.linspace(10, 20, n).astype(np.float32),
        "dec": np.linspace(-5, 5, n).astype(np.float32),
    } | extra
    return factory().make("astraAllStarASPCAP", tmp_path / name, {"HDU2": n}, values={"HDU2": values})


def test_a_summary_file_contradicting_the_lake_is_not_half_written(lake: Lake, tmp_path: Path) -> None:
    first = _summary(tmp_path, "a.fits", [11, 12, 13], ["a", "b", "c"])
    assert run(lake, first).failed == 0
    before = {t: _rows(lake, t) for t in ("source", "apogee_star", "aspcap")}
    folder = tmp_path / "in"
    folder.mkdir()
    bad = _summary(folder, "b.fits", [21, 99], ["x", "b"])  # row 1: spectrum "b" of sdss_id 12 given to 99
    good = _summary(folder, "c.fits", [31], ["z"])
    s = run(lake, folder)
    assert (s.read, s.failed) == (1, 1)
    (err,) = _errors(lake)
    assert err["path"] == str(bad) and (err["hdu"], err["hdu_row"], err["column_name"]) == (2, 1, "sdss_id")
    assert str(err["error"]).startswith(f"{bad}: HDU 2, row 1: aspcap: row 1 gives sdss_id=99, but its spectrum has sdss_id=12")
    after = {t: _rows(lake, t) for t in ("source", "apogee_star", "aspcap")}
    assert after == {t: n + 1 for t, n in before.items()}  # c.fits only
    got = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_pylist()
    assert got == [11, 12, 13, 31]  # neither 21 nor 99: the failed file's sources were staged, never committed
    assert lake.sql("SELECT obj, sdss_id FROM apogee_star WHERE obj = 'b'").to_pylist() == [{"obj": "b", "sdss_id": 12}]
    assert str(good) in lake.sql("SELECT path FROM ingest_files").column(0).to_pylist()


def test_a_value_outside_its_range_names_file_hdu_row_and_column(lake: Lake, tmp_path: Path) -> None:
    path = _summary(tmp_path, "d.fits", [41, 42, 43], ["p", "q", "r"], dec=np.array([0.0, 10.0, 95.0], np.float32))
    s = run(lake, path)
    assert s.failed == 1 and s.read == 0
    (err,) = _errors(lake)
    assert (err["hdu"], err["hdu_row"], err["column_name"]) == (2, 2, "dec")
    assert "HDU 2, row 2: source.dec: row 2 is 95.0, outside its declared range [-90, 90]" in str(err["error"])
    assert {t for t in lake.info()["tables"] if not t.startswith("ingest_")} == set()


@pytest.mark.parametrize("cut", ["hdu4", 0.45, 0.6, 0.999])
def test_truncated_apstar_fails(lake: Lake, tmp_path: Path, cut: str | float) -> None:
    data = APSTAR.read_bytes()
    with fits.open(APSTAR) as h:
        end = h[4].fileinfo()["hdrLoc"] if cut == "hdu4" else int(len(data) * float(cut))
    bad = tmp_path / "apStar-cut.fits"
    bad.write_bytes(data[:end])
    s = run(lake, bad)
    assert (s.read, s.failed) == (0, 1) and "truncated?" in s.errors[0] and "\n" not in s.errors[0]
    assert "apogee_star" not in lake.info()["tables"]


def _mkfifo(path: Path) -> Path:
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    os.mkfifo(path)
    return path


def test_a_fifo_named_on_the_command_line_is_a_failure_not_a_hang(lake: Lake, tmp_path: Path) -> None:
    fifo = _mkfifo(tmp_path / "pipe.fits")
    out: dict[str, object] = {}

    def ingest() -> None:
        inputs = scan_inputs([fifo, APVISIT])
        out["summary"] = Ingestor(lake.catalog).run(inputs.files, problems=inputs.problems)

    worker = threading.Thread(target=ingest, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), "ingest blocked on a FIFO"
    s = out["summary"]
    assert (s.read, s.failed) == (1, 1)  # type: ignore[attr-defined]
    assert _errors(lake)[0]["error"] == f"{fifo}: not a regular file (FIFO)"


def test_fifo_broken_link_and_unlistable_folder_in_a_folder_are_failures(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "in"
    (folder / "locked").mkdir(parents=True)
    shutil.copy(APVISIT, folder / APVISIT.name)
    _mkfifo(folder / "pipe.fits")
    (folder / "gone.fits").symlink_to(folder / "nowhere.fits")
    (folder / "notes.txt").write_text("not FITS, not reported")
    real_scandir = os.scandir

    def scandir(path: object = ".") -> object:  # a folder this user may not list (also when tests run as root)
        if Path(str(path)).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    inputs = scan_inputs([folder])
    monkeypatch.undo()
    assert inputs.files == [str((folder / APVISIT.name).resolve())]
    s = Ingestor(lake.catalog).run(inputs.files, problems=inputs.problems)
    assert (s.read, s.failed) == (1, 3)
    reasons = {Path(str(e["path"])).name: str(e["error"]) for e in _errors(lake)}
    assert reasons["pipe.fits"].endswith("not a regular file (FIFO)")
    assert "broken symbolic link" in reasons["gone.fits"]
    assert reasons["locked"].endswith("cannot list folder: Permission denied")


def test_ingest_refuses_a_path_that_is_not_a_lake_unless_asked_to_create_it(tmp_path: Path, files: Path) -> None:
    target = tmp_path / "new-lake"
    res = CliRunner().invoke(app, ["ingest", str(files), "--lake", str(target)])
    assert res.exit_code == 2 and "is not an astra-lake" in res.output and "--create" in res.output
    assert not target.exists()
    plain = tmp_path / "plain"
    plain.mkdir()
    assert CliRunner().invoke(app, ["ingest", str(files), "--lake", str(plain)]).exit_code == 2
    assert list(plain.iterdir()) == []
    res = CliRunner().invoke(app, ["ingest", str(files), "--lake", str(target), "--create"])
    assert res.exit_code == 0 and (target / "lake.json").exists()


def test_nothing_to_ingest_creates_nothing(tmp_path: Path) -> None:
    target = tmp_path / "lk"
    res = CliRunner().invoke(app, ["ingest", str(tmp_path / "nowhere"), "--lake", str(target), "--create"])
    assert res.exit_code == 2 and "no such file or directory" in res.output and not target.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    res = CliRunner().invoke(app, ["ingest", str(empty), "--lake", str(target), "--create"])
    assert res.exit_code == 2 and not target.exists()
    assert res.output.count("\n") == 1 and f"no FITS files (*.fits, *.fits.gz, *.fit, *.fts) under {empty}" in res.output


def test_the_summary_counts_rows_stored_and_says_when_rows_replaced_each_other(tmp_path: Path) -> None:
    """Three visits of two stars: 3 spectra and results but 2 sources stored; the CLI says so."""
    apogee = {
        "sdss_id": np.array([21, 21, 22]),
        "release": np.array(["dr19"] * 3),
        "apred": np.array(["1.3"] * 3),
        "telescope": np.array(["apo25m"] * 3),
        "plate": np.array(["p1", "p1", "p2"]),
        "mjd": np.array([59000, 59001, 59000], np.int32),
        "fiber": np.array([5, 5, 7], np.int32),
        "ra": np.array([5.0, 5.0, 6.0], np.float32),
        "dec": np.array([1.0, 1.0, 2.0], np.float32),
    }
    path = factory().make(
        "astraAllVisitApogeeNet", tmp_path / "v.fits", {"HDU2": 3}, values={"HDU2": apogee}, pipeline="ApogeeNetV2"
    )
    res = CliRunner().invoke(app, ["ingest", str(path), "--lake", str(tmp_path / "lk"), "--create"])
    assert res.exit_code == 0, res.output
    assert "source: 2 rows stored; 1 rows given were replaced by later rows with the same key" in res.output
    assert "apogee_visit: 3 rows stored\n" in res.output and "apogeenet: 3 rows stored\n" in res.output
    lake = Lake(tmp_path / "lk")
    assert (_rows(lake, "source"), _rows(lake, "apogee_visit"), _rows(lake, "apogeenet")) == (2, 3, 3)
