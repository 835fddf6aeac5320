"""``astra-lake flags`` end to end through typer."""

from __future__ import annotations

from typer.testing import CliRunner

from astra_lake.cli import app

runner = CliRunner()


def test_decode_the_issue_example() -> None:
    res = runner.invoke(app, ["flags", "aspcap", "67108896"])
    assert res.exit_code == 0, res.output
    assert "flag_teff_grid_edge_warn" in res.output and "flag_low_snr" in res.output
    assert "flag_bad: True (because of flag_low_snr)" in res.output


def test_lists_pipelines_and_shows_one_table() -> None:
    res = runner.invoke(app, ["flags"])
    assert res.exit_code == 0 and "aspcap" in res.output and "mdwarftype" in res.output
    res = runner.invoke(app, ["flags", "bossnet"])
    assert res.exit_code == 0 and "flag_suspicious_fe_h" in res.output


def test_unknown_names_exit_2_with_valid_names() -> None:
    res = runner.invoke(app, ["flags", "aspcapp"])
    assert res.exit_code == 2 and "valid tables" in res.output and "aspcap" in res.output
    res = runner.invoke(app, ["flags", "aspcap", "--column", "nope"])
    assert res.exit_code == 2 and "result_flags" in res.output


def test_every_command_has_help() -> None:
    for args in (["--help"], ["flags", "--help"], ["schema", "--help"], ["schema", "generate", "--help"]):
        assert runner.invoke(app, args).exit_code == 0
