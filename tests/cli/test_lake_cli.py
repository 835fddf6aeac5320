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
