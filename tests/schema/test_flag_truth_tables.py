"""Truth tables written from the seed's Bitflags Reference (an independent reference, not data_schema/)."""

from __future__ import annotations

import pytest

from astra_lake.errors import UndefinedSummaryFlagError, UnknownTableError
from astra_lake.schema import flags as F
from astra_lake.schema.loader import load_schema

W, B, WB, N = (True, False), (False, True), (True, True), (False, False)
ASPCAP = {b: WB for b in (0, 1, 2, 3, 4, 6, 8, *range(21, 28))} | {b: W for b in (5, 7, *range(9, 21))}

# pipeline -> {bit: (makes flag_warn, makes flag_bad)} for the newest rules
SEED = {
    "apogeenet": {0: B, 1: B, 2: B, 3: WB},
    "astronn_dist": {0: B, 1: B, 2: W, 11: B},
    "bossnet": {0: B, 1: B, 2: B, 3: WB, 4: W},
    "the_payne": {0: WB, 1: W, 2: W, 3: W, 4: W},
    "slam": {0: WB, 1: B, 2: B, 3: WB, 4: N, 5: N},
    "aspcap": ASPCAP,
    "mdwarftype": {0: B, 1: B},
}
NEITHER = {"the_cannon": [0], "snow_white": [0, 1, 2, 3, 4, 5, 6], "corv": [0, 5, 6, 7], "clam": [0, 1], "nmf_rectify": [0, 3, 4]}


@pytest.mark.parametrize("table", sorted(SEED))
def test_single_bit_truth_table(table: str) -> None:
    edition = load_schema().table(table).summary_column.latest  # type: ignore[union-attr]
    assert sorted(f.bit for f in edition.flags) == sorted(SEED[table])
    for bit, (warn, bad) in SEED[table].items():
        if table != "mdwarftype":
            assert F.flag_warn(table, 1 << bit) is warn, (table, bit)
        assert F.flag_bad(table, 1 << bit) is bad, (table, bit)


def test_aspcap_bad_mask_is_the_published_one() -> None:
    rule = F.summary_rule("aspcap", "flag_bad")
    assert rule.any_mask == 0xFE0015F == 266338655
    assert F.flag_warn("aspcap", 1 << 40) is True  # warn = any bit set, named or not


def test_astronn_flag_bad_needs_all_three_uncertain_flags() -> None:
    assert [F.flag_bad("astronn", v) for v in (1, 2, 4, 3, 5, 6, 7, 2048 | 7)] == [False] * 6 + [True, True]
    assert F.flag_warn("astronn", 2048) is True


def test_astronn_v0_6_rule_is_logg_and_feh_or_teff() -> None:
    v06 = 6000
    assert [F.flag_bad("astronn", v, v06) for v in (1, 4, 5, 2, 3)] == [False, False, True, True, True]
    assert F.flag_bad("astronn", 5, 8000) is False


def test_apogeenet_v0_6_uses_apogeenet_v2_flags() -> None:
    assert F.decode("apogeenet", 1, v_astra=6000) == ["flag_teff_unreliable"]
    assert F.decode("apogeenet", 1) == ["flag_runtime_exception"]
    assert F.flag_bad("apogeenet", 1 << 6, 6000) is False and F.flag_warn("apogeenet", 1 << 6, 6000) is True


@pytest.mark.parametrize("table", sorted(NEITHER))
def test_pipelines_without_summaries_raise(table: str) -> None:
    edition = load_schema().table(table).summary_column.latest  # type: ignore[union-attr]
    assert [f.bit for f in edition.flags] == NEITHER[table]
    for which in (F.flag_warn, F.flag_bad):
        with pytest.raises(UndefinedSummaryFlagError, match=table):
            which(table, 1)


def test_mdwarftype_has_no_flag_warn_and_line_forest_no_flags() -> None:
    with pytest.raises(UndefinedSummaryFlagError, match="only flag_bad"):
        F.flag_warn("mdwarftype", 1)
    with pytest.raises(UndefinedSummaryFlagError):
        F.flag_bad("line_forest", 0)
    with pytest.raises(UnknownTableError, match="valid tables"):
        F.flag_bad("no_such_pipeline", 0)


def test_null_flags_give_null() -> None:
    assert F.flag_bad("aspcap", None) is None and F.flag_warn("bossnet", None) is None


def test_decode_encode_roundtrip_and_aliases() -> None:
    assert F.decode("aspcap", 67108896) == ["flag_teff_grid_edge_warn", "flag_low_snr"]
    assert F.encode("aspcap", ["flag_initial_guess_from_doppler_sdss4"], "initial_flags") == 2
    assert F.decode("aspcap", 2, "initial_flags") == ["flag_initial_guess_from_doppler"]
    assert F.decode("source", 1 << 61, "sdss4_apogee_member_flags") == ["flag_sdss4_apogee_member_carina"]
    assert F.encode("source", ["flag_sdss4_apogee_member_carina"], "sdss4_apogee_member_flags") == 2**61


def test_signed32_sources_are_recovered() -> None:
    raw = F.from_signed32([-(2**31) | 3])
    assert raw.tolist() == [2**31 + 3]
    assert F.decode("source", int(raw[0]), "sdss4_apogee_target1_flags") == [
        "flag_sdss4_apogee_faint",
        "flag_sdss4_apogee_medium",
    ]
