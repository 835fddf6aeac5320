"""Lake commands end to end through typer."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from astra_lake import Lake
from astra_lake.cli import app
from astra_lake.ingest import synthetic as S

runner = CliRunner()


def test_init_info_sql_tag_compact_vacuum(tmp_path: Path, monkeypatch: object) -> None:
    path = tmp_path / "lk"
    assert runner.invoke(app, ["init", str(path)]).exit_code == 0
    Lake(path).write("source", S.sources(20, seed=1))
    res = runner.invoke(app, ["info", "--lake", str(path)])
    assert res.exit_code == 0 and "source" in res.output and "--lake option" in res.output
    res = runner.invoke(app, ["sql", "SELECT count(*) AS n FROM source", "--lake", str(path), "--format", "csv"])
    assert res.exit_code == 0 and res.output.splitlines() == ['"n"', "20"]
    out = tmp_path / "o.parquet"
    res = runner.invoke(app, ["sql", "SELECT * FROM source", "--lake", str(path), "-f", "parquet", "-o", str(out)])
    assert res.exit_code == 0 and out.stat().st_size > 0
    assert runner.invoke(app, ["tag", "v1", "--lake", str(path)]).exit_code == 0
    assert runner.invoke(app, ["tag", "v1", "--lake", str(path)]).exit_code == 2
    assert runner.invoke(app, ["compact", "--lake", str(path)]).exit_code == 0
    res = runner.invoke(app, ["vacuum", "--lake", str(path)])
    assert res.exit_code == 0 and "would be deleted" in res.output
    res = runner.invoke(app, ["sql", "SELEC nonsense", "--lake", str(path)])
    assert res.exit_code == 2 and "query failed" in res.output
    monkeypatch.setenv("ASTRA_LAKE", str(path))  # type: ignore[attr-defined]
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0 and "ASTRA_LAKE environment variable" in res.output


def test_missing_lake_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["info", "--lake", str(tmp_path / "none")])
    assert res.exit_code == 2 and "not an astra-lake" in res.output


def test_lookup_prints_one_sources_rows(tmp_path: Path) -> None:
    """`astra-lake lookup` equals the SQL answer for the same source; mistakes are one `error:` line."""
    import json

    path = tmp_path / "lk"
    lake = Lake.init(path)
    src = S.sources(40, seed=2)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy()[:20], seed=3):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=4))
    sid = int(src.column("sdss_id")[7].as_py())
    q = f"SELECT task_pk, teff, logg, flag_bad FROM aspcap WHERE sdss_id = {sid}"
    want = runner.invoke(app, ["sql", q, "--lake", str(path), "-f", "json"])
    cols = "task_pk,teff,logg,flag_bad"
    res = runner.invoke(app, ["lookup", "aspcap", "--sdss-id", str(sid), "-c", cols, "--lake", str(path), "-f", "json"])
    assert res.exit_code == 0 and json.loads(res.output) == json.loads(want.output) != []
    res = runner.invoke(app, ["lookup", "aspcap", "--sdss-id", str(sid), "--lake", str(path)])
    assert res.exit_code == 0 and "teff" in res.output and "row 1" in res.output
    res = runner.invoke(app, ["lookup", "aspcap", "--sdss-id", "999999", "--lake", str(path)])
    assert res.exit_code == 2 and res.output.startswith("error:") and "sdss_id 999999 is not in the source table" in res.output
    res = runner.invoke(app, ["lookup", "aspcap", "--lake", str(path)])
    assert res.exit_code == 2 and "exactly one of" in res.output
    res = runner.invoke(app, ["lookup", "aspcap", "--sdss-id", str(sid), "-c", "nosuch", "--lake", str(path)])
    assert res.exit_code == 2 and "aspcap has no column(s) nosuch" in res.output
