"""One error path: every failure a user can cause is one ``error: ...`` line and a documented exit code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from astra_lake import Lake
from astra_lake.cli import COMMANDS, _Commands, _summary, app

runner = CliRunner()


def one_error(res: object, code: int) -> str:
    """The single error line of a failed invocation (no traceback, nothing else on stderr)."""
    assert res.exit_code == code, res.output  # type: ignore[attr-defined]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr  # type: ignore[attr-defined]
    assert "Traceback" not in res.output  # type: ignore[attr-defined]
    return lines[0]


@pytest.mark.parametrize("command", ["compact", "vacuum"])
def test_unknown_table_names_the_valid_ones(demo_lake: Path, command: str) -> None:
    line = one_error(runner.invoke(app, [command, "nosuch", "--lake", str(demo_lake)]), 2)
    assert "unknown table 'nosuch'" in line and "aspcap" in line and "apogee_star" in line


def test_output_into_a_missing_folder(demo_lake: Path) -> None:
    res = runner.invoke(app, ["sql", "SELECT 1", "-f", "parquet", "-o", "/nonexistent/dir/x.parquet", "--lake", str(demo_lake)])
    line = one_error(res, 2)
    assert "/nonexistent/dir does not exist" in line


def test_pixel_arrays_in_csv_and_table_are_summarised(demo_lake: Path) -> None:
    res = runner.invoke(app, ["sql", "SELECT * FROM apogee_star LIMIT 1", "--format", "csv", "--lake", str(demo_lake)])
    assert res.exit_code == 0, res.output
    header, row = res.stdout.splitlines()
    cells = dict(zip(json.loads(f"[{header}]"), row.split(","), strict=False))
    assert cells["flux"] == '"[8575 x float32]"' and cells["pixel_flags"] == '"[8575 x int32]"'
    assert "flux, ivar, pixel_flags" in res.stderr  # says the arrays were shortened
    res = runner.invoke(app, ["sql", "SELECT spectrum_pk, flux FROM apogee_star LIMIT 1", "--lake", str(demo_lake)])
    assert res.exit_code == 0 and "[8575 x float32]" in res.stdout


def test_json_is_one_array_jsonl_a_line_per_row_with_whole_arrays(demo_lake: Path, tmp_path: Path) -> None:
    lake = Lake(demo_lake)
    query = "SELECT spectrum_pk, sdss_id, flux, created FROM apogee_star ORDER BY spectrum_pk"
    want = lake.sql(query)
    res = runner.invoke(app, ["sql", query, "-f", "json", "--lake", str(demo_lake)])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert isinstance(rows, list) and len(rows) == want.num_rows > 10
    np.testing.assert_array_equal(np.asarray(rows[2]["flux"], np.float32), want.column("flux")[2].values.to_numpy())
    assert rows[0]["created"] == want.column("created")[0].as_py().isoformat()
    out = tmp_path / "rows.jsonl"
    res = runner.invoke(app, ["sql", query, "-f", "jsonl", "-o", str(out), "--lake", str(demo_lake)])
    assert res.exit_code == 0, res.output
    lines = out.read_text().splitlines()
    assert [json.loads(ln)["spectrum_pk"] for ln in lines] == want.column("spectrum_pk").to_pylist()


def test_json_writes_nan_as_null(demo_lake: Path) -> None:
    res = runner.invoke(app, ["sql", "SELECT 'nan'::FLOAT AS x, 1.5 AS y", "-f", "json", "--lake", str(demo_lake)])
    assert res.exit_code == 0 and json.loads(res.stdout) == [{"x": None, "y": 1.5}]


def test_files_are_written_from_arrow(demo_lake: Path, tmp_path: Path) -> None:
    out = tmp_path / "spectra.parquet"
    query = "SELECT spectrum_pk, flux FROM apogee_star"
    res = runner.invoke(app, ["sql", query, "-f", "parquet", "-o", str(out), "--lake", str(demo_lake)])
    assert res.exit_code == 0, res.output
    got = pq.read_table(out)
    n = Lake(demo_lake).sql("SELECT count(*) FROM apogee_star").column(0)[0].as_py()
    assert got.num_rows == n and len(got.column("flux")[0]) == 8575
    assert f"wrote {n:,} rows" in res.stderr
    csv = tmp_path / "a.csv"
    res = runner.invoke(app, ["--quiet", "sql", "SELECT 1 AS a", "-f", "csv", "-o", str(csv), "--lake", str(demo_lake)])
    assert res.exit_code == 0 and res.stderr == "" and csv.read_text().splitlines() == ['"a"', "1"]
    one_error(runner.invoke(app, ["sql", "SELECT 1", "-f", "parquet", "--lake", str(demo_lake)]), 2)


def test_allow_external_lets_a_query_read_other_files_only_when_given(demo_lake: Path, tmp_path: Path) -> None:
    mine = tmp_path / "mine.csv"
    mine.write_text("a\n41\n1\n")
    query = f"SELECT sum(a) AS s FROM read_csv('{mine}')"
    line = one_error(runner.invoke(app, ["sql", query, "-f", "csv", "--lake", str(demo_lake)]), 2)
    assert "external_access=True" in line or "--allow-external" in line
    res = runner.invoke(app, ["--quiet", "sql", query, "-f", "csv", "--allow-external", "--lake", str(demo_lake)])
    assert res.exit_code == 0 and res.stdout.splitlines() == ['"s"', "42"]


def test_sql_errors_are_the_query_s(demo_lake: Path) -> None:
    line = one_error(runner.invoke(app, ["sql", "SELEC 1", "--lake", str(demo_lake)]), 2)
    assert line.startswith('error: query failed: Parser Error: syntax error at or near "SELEC"') and "LINE 1" not in line
    line = one_error(runner.invoke(app, ["sql", "SELECT * FROM nosuch", "--lake", str(demo_lake)]), 2)
    assert "nosuch does not exist" in line


def test_init_on_a_file(tmp_path: Path) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    line = one_error(runner.invoke(app, ["init", str(path)]), 2)
    assert f"{path} is a file" in line
    assert path.read_text() == "x"


def test_negative_retention(demo_lake: Path) -> None:
    line = one_error(runner.invoke(app, ["vacuum", "--retention-hours", "-5", "--lake", str(demo_lake)]), 2)
    assert "--retention-hours" in line and "greater than or equal to 0" in line and "astra-lake vacuum --help" in line


def test_malformed_config_names_the_file(no_user_config: Path) -> None:
    no_user_config.parent.mkdir(parents=True)
    no_user_config.write_text("lake = \n")
    line = one_error(runner.invoke(app, ["info"]), 2)
    assert f"{no_user_config}: not valid TOML" in line
    no_user_config.write_text("lake = 5\n")
    line = one_error(runner.invoke(app, ["info"]), 2)
    assert f"{no_user_config}: lake must be str, got int 5" in line


def test_config_file_found_through_xdg_config_home(demo_lake: Path, no_user_config: Path) -> None:
    no_user_config.parent.mkdir(parents=True)
    no_user_config.write_text(f'lake = "{demo_lake}"\n')
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0, res.output
    assert f"lake {demo_lake} (from config file {no_user_config})" in res.stdout


def test_info_says_it_used_the_default_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    line = one_error(runner.invoke(app, ["info"]), 2)
    assert "not an astra-lake" in line and "the default ./astra-lake: no --lake, no $ASTRA_LAKE" in line
    Lake.init(tmp_path / "astra-lake")
    res = runner.invoke(app, ["info"])
    assert res.exit_code == 0 and "(from the default ./astra-lake" in res.stdout


def test_corrupt_lake_json(demo_lake: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(demo_lake, copy)
    (copy / "lake.json").write_text('{"format": "astra-lake",')
    line = one_error(runner.invoke(app, ["info", "--lake", str(copy)]), 1)
    assert f"{copy / 'lake.json'}: not valid JSON" in line
    (copy / "lake.json").write_text("[]")
    line = one_error(runner.invoke(app, ["compact", "--lake", str(copy)]), 1)
    assert '"format": "astra-lake"' in line


def test_duplicate_tag_is_usage(demo_lake: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(demo_lake, copy)
    assert runner.invoke(app, ["tag", "v1", "--lake", str(copy)]).exit_code == 0
    line = one_error(runner.invoke(app, ["tag", "v1", "--lake", str(copy)]), 2)
    assert "tag 'v1' already names lake version" in line


def test_unknown_command_suggests_the_close_one() -> None:
    line = one_error(runner.invoke(app, ["compat"]), 2)
    assert "No such command 'compat'" in line and "Did you mean 'compact'?" in line


def test_verbose_adds_the_traceback_quiet_and_verbose_exclude(demo_lake: Path) -> None:
    res = runner.invoke(app, ["--verbose", "compact", "nosuch", "--lake", str(demo_lake)])
    assert res.exit_code == 2 and "Traceback" in res.stderr and res.stderr.splitlines()[-1].startswith("error: unknown table")
    one_error(runner.invoke(app, ["--verbose", "--quiet", "info"]), 2)


def test_unexpected_errors_are_one_line_too(demo_lake: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: Lake) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(Lake, "info", broken)
    line = one_error(runner.invoke(app, ["info", "--lake", str(demo_lake)]), 1)
    assert line == "error: unexpected RuntimeError: boom (a bug: run again with --verbose and report the traceback)"


def test_version() -> None:
    from astra_lake import __version__

    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout.strip() == f"astra-lake {__version__}"


def test_help_lists_every_command_and_documents_exit_codes() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    text = " ".join(res.stdout.split())
    assert "Exit codes: 0 done; 1 the operation failed" in text and "2 bad usage" in text
    for name in COMMANDS:
        assert name in res.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_registered_command_loads_with_the_listed_summary(name: str) -> None:
    """The command list is read from source without importing; it must match what the command says."""
    res = runner.invoke(app, [name, "--help"])
    assert res.exit_code == 0, res.output
    assert _summary(COMMANDS[name])
    assert " ".join(_summary(COMMANDS[name]).split()[:4]) in " ".join(res.stdout.split())
    assert _Commands.lazy is COMMANDS
