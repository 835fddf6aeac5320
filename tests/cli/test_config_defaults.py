"""Every documented default of the user configuration is what the commands use when no option is given."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from astra_lake import Lake
from astra_lake.cli import app, ingest_cmd
from astra_lake.ingest import synthetic as S

runner = CliRunner()
DATA = Path(__file__).parents[1] / "data" / "fixtures"


@pytest.fixture()
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "config.toml"
    monkeypatch.setenv("ASTRA_LAKE_CONFIG", str(path))
    return path


def config_set(key: str, value: str) -> None:
    res = runner.invoke(app, ["config", "set", key, value])
    assert res.exit_code == 0, res.output


@pytest.fixture(scope="module")
def small_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """20 sources written in two commits, tagged after the first, then compacted (leaving replaced files)."""
    lake = Lake.init(tmp_path_factory.mktemp("defaults") / "lake", auto_compact_min_files=0)
    src = S.sources(20, seed=1)
    lake.write("source", src.slice(0, 12))
    lake.tag("first")
    lake.write("source", src.slice(12))
    lake.compact("source")
    return lake


def sql_csv(lake: Lake, query: str) -> list[str]:
    res = runner.invoke(app, ["sql", query, "--lake", str(lake.path), "--format", "csv"])
    assert res.exit_code == 0, res.output
    return res.output.splitlines()[1:]


def test_query_version_threads_memory_limit(config: Path, small_lake: Lake) -> None:
    assert sql_csv(small_lake, "SELECT count(*) FROM source") == ["20"]
    config_set("query.version", "first")
    config_set("query.threads", "1")
    config_set("query.memory_limit", "256MB")
    assert sql_csv(small_lake, "SELECT count(*) FROM source") == ["12"]  # the tag the configuration names
    assert sql_csv(small_lake, "SELECT current_setting('threads')") == ["1"]
    assert sql_csv(small_lake, "SELECT current_setting('memory_limit')") == ['"244.1 MiB"']  # 256 MB
    res = runner.invoke(app, ["sql", "SELECT count(*) FROM source", "--lake", str(small_lake.path), "-f", "csv", "-v", "2"])
    assert res.output.splitlines()[1:] == ["20"]  # an option still wins


def test_vacuum_retention_hours(config: Path, small_lake: Lake) -> None:
    def would_delete() -> str:
        res = runner.invoke(app, ["vacuum", "source", "--lake", str(small_lake.path)])
        assert res.exit_code == 0, res.output
        return res.output.strip()

    # with no retention: the files of older versions, except those of the latest and the tagged version
    ever = {p for v in range(1, small_lake.version + 1) for p in small_lake.snapshot(v).paths("source")}
    old = ever - set(small_lake.snapshot().paths("source")) - set(small_lake.snapshot("first").paths("source"))
    assert old and sorted(small_lake.vacuum("source", retention_hours=0)["source"]) == sorted(old)
    assert would_delete() == "source: 0 file(s) would be deleted"  # 168 h: the replaced files are recent
    config_set("compaction.retention_hours", "0")
    assert would_delete() == f"source: {len(old)} file(s) would be deleted"


def test_init_auto_compact_min_files(config: Path, tmp_path: Path) -> None:
    assert runner.invoke(app, ["init", str(tmp_path / "a")]).exit_code == 0
    assert json.loads((tmp_path / "a" / "lake.json").read_text())["auto_compact_min_files"] == 8
    config_set("compaction.auto_compact_min_files", "0")
    assert runner.invoke(app, ["init", str(tmp_path / "b")]).exit_code == 0
    assert Lake(tmp_path / "b").catalog.settings["auto_compact_min_files"] == 0
    assert runner.invoke(app, ["init", str(tmp_path / "c"), "--auto-compact-min-files", "3"]).exit_code == 0
    assert Lake(tmp_path / "c").catalog.settings["auto_compact_min_files"] == 3


def test_ingest_workers_and_batch_files(config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[dict[str, Any]] = []
    real = ingest_cmd.Ingestor

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append({k: kwargs[k] for k in ("workers", "batch_files")})
        return real(*args, **kwargs)

    monkeypatch.setattr(ingest_cmd, "Ingestor", spy)
    files = [str(DATA / "apStar-dr17-2M17335483-2753043.fits"), str(DATA / "spec-3586-55181-0500.fits")]
    lake = tmp_path / "lake"
    assert runner.invoke(app, ["ingest", *files, "--lake", str(lake), "--create"]).exit_code == 0
    config_set("ingest.workers", "2")
    config_set("ingest.batch_files", "1")
    res = runner.invoke(app, ["ingest", *files, "--lake", str(lake)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["ingest", *files, "--lake", str(lake), "-w", "1", "--batch-files", "5"])
    assert res.exit_code == 0, res.output
    assert seen == [{"workers": 1, "batch_files": 64}, {"workers": 2, "batch_files": 1}, {"workers": 1, "batch_files": 5}]
