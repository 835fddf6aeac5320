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


def test_a_bit_of_an_all_of_rule_is_in_the_rule_not_bad() -> None:
    """AstroNN 0.8: flag_bad needs all three uncertain flags; one alone is in the bad rule, and not bad."""
    res = runner.invoke(app, ["flags", "astronn", "1"])
    assert res.exit_code == 0, res.output
    assert "bit  0  flag_uncertain_logg  [in the warn rule, in the bad rule]" in res.output
    assert "flag_bad: False" in res.output
    assert "bad]" not in res.output.replace("in the bad rule]", "")


def test_negative_and_hex_values() -> None:
    from astra_lake.schema import flags as F

    res = runner.invoke(app, ["flags", "aspcap", "-5"])
    assert res.exit_code == 0, res.output
    decoded = [ln.split()[2] for ln in res.output.splitlines() if ln.startswith("  bit ")]
    assert decoded == F.decode("aspcap", -5) and "flag_missing_model_flux" in decoded and "flag_ferre_fail" in decoded
    assert "flag_bad: True" in res.output
    res = runner.invoke(app, ["flags", "aspcap", str(-(2**63))])
    assert res.exit_code == 0 and "undefined bits set: [63]" in res.output
    res = runner.invoke(app, ["flags", "aspcap", "0x4000020"])
    assert res.exit_code == 0 and "flag_low_snr" in res.output and "flag_teff_grid_edge_warn" in res.output


def test_a_value_that_is_not_an_integer_is_said_in_words() -> None:
    res = runner.invoke(app, ["flags", "aspcap", "12abc"])
    assert res.exit_code == 2
    assert res.stderr.strip().startswith("error: flag value '12abc' is not an integer;")
    assert "invalid literal" not in res.output
    res = runner.invoke(app, ["flags", "aspcap", str(2**64)])
    assert res.exit_code == 2 and "does not fit in 64 bits" in res.stderr
