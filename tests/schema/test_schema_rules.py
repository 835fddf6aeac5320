"""data_schema/ as a whole: every pipeline of the seed, identity columns, unique names, generated files current."""

from __future__ import annotations

import pyarrow as pa
import pytest

from astra_lake.errors import SchemaError
from astra_lake.schema.arrow import arrow_schema
from astra_lake.schema.generate import stale_generated
from astra_lake.schema.loader import load_schema
from astra_lake.schema.versions import int_to_version, major_minor, version_to_int

SEED_PIPELINES = {
    "apogeenet",
    "aspcap",
    "astronn",
    "astronn_dist",
    "best",
    "bossnet",
    "clam",
    "corv",
    "ferre_coarse",
    "ferre_stellar_parameters",
    "ferre_chemical_abundances",
    "line_forest",
    "mdwarftype",
    "nmf_rectify",
    "slam",
    "snow_white",
    "the_cannon",
    "the_payne",
}
SPECTRA = {
    "apogee_visit",
    "apogee_visit_in_apstar",
    "apogee_star",
    "boss_visit",
    "apogee_combined",
    "boss_combined",
    "apogee_rest_frame_visit",
    "boss_rest_frame_visit",
}
PROVENANCE = ["task_pk", "source_pk", "spectrum_pk", "v_astra", "created", "modified", "t_elapsed", "t_overhead", "tag"]
ELEMENTS = [
    "al_h",
    "c_12_13",
    "ca_h",
    "ce_h",
    "c_h",
    "co_h",
    "cr_h",
    "cu_h",
    "fe_h",
    "k_h",
    "mg_h",
    "mn_h",
    "na_h",
    "nd_h",
    "ni_h",
    "n_h",
    "o_h",
    "p_h",
    "si_h",
    "s_h",
    "ti_h",
    "v_h",
]


def test_every_table_of_the_seed_is_declared() -> None:
    schema = load_schema()
    assert {t.name for t in schema.pipelines} == SEED_PIPELINES
    assert {t.name for t in schema.of_kind("spectrum")} == SPECTRA
    assert [t.name for t in schema.of_kind("source")] == ["source"]


@pytest.mark.parametrize("table", sorted(SEED_PIPELINES))
def test_pipelines_carry_provenance(table: str) -> None:
    names = load_schema().table(table).column_names
    assert all(p in names for p in PROVENANCE)
    assert load_schema().table(table).key == ("spectrum_pk", "v_astra_major_minor")


def test_aspcap_has_all_22_elements_with_errors_flags_and_rchi2() -> None:
    tbl = load_schema().table("aspcap")
    names = set(tbl.column_names)
    for el in ELEMENTS:
        assert {el, f"e_{el}", f"{el}_flags", f"{el}_rchi2"} <= names, el
        fc = tbl.flag_column(f"{el}_flags").latest
        upper = el in {"c_h", "ce_h", "cu_h", "n_h", "na_h", "nd_h", "o_h", "p_h", "s_h", "v_h"}
        assert [f.bit for f in fc.flags] == (list(range(12)) if upper else list(range(5, 12))), el
    assert len(tbl.columns) > 200


def test_flag_names_are_unique_within_each_table() -> None:
    for tbl in load_schema().flagged_tables:
        seen: dict[str, str] = {}
        for fc in tbl.flag_columns:
            for name in {n for e in fc.editions for f in e.flags for n in (f.name, *f.aliases)}:
                assert name not in seen, (tbl.name, name, seen.get(name), fc.name)
                seen[name] = fc.name


def test_source_flags_are_64_bit_and_complete() -> None:
    src = load_schema().table("source")
    assert sum(len(fc.latest.flags) for fc in src.flag_columns) == 280
    assert max(f.bit for f in src.flag_column("sdss4_apogee_member_flags").latest.flags) == 61
    assert arrow_schema("source").field("sdss4_apogee_member_flags").type == pa.int64()
    assert arrow_schema("source").field("sdss5_target_flags").type == pa.binary()
    assert len(load_schema().targeting) > 500


def test_arrow_schema_has_units_descriptions_and_fixed_pixels() -> None:
    sch = arrow_schema("apogee_star")
    assert sch.field("flux").type == pa.list_(pa.float32(), 8575)
    assert sch.field("flux").metadata[b"unit"].startswith(b"1e-17")
    assert sch.field("_healpix_29").nullable is False
    assert arrow_schema("aspcap").field("teff").metadata[b"unit"] == b"K"


def test_generated_files_are_current() -> None:
    assert stale_generated() == [], "run `astra-lake schema generate` and commit the result"


def test_versions_round_trip() -> None:
    for v in ("0.6.0", "0.8.1", "2147.999.999"):
        assert int_to_version(version_to_int(v)) == v
    assert version_to_int("0.8") == 8000 and major_minor(8001) == 8
    with pytest.raises(ValueError, match="not an Astra version"):
        version_to_int("eight")


def test_bad_schema_is_rejected(tmp_path: pytest.TempPathFactory) -> None:
    import shutil

    from astra_lake.schema.loader import load_schema as load

    root = tmp_path / "ds"  # type: ignore[operator]
    shutil.copytree(load_schema().directory, root, ignore=shutil.ignore_patterns("generated"))
    path = root / "tables" / "clam.yaml"
    path.write_text(path.read_text().replace("bit: 1\n", "bit: 0\n", 1))
    with pytest.raises(SchemaError, match=r"clam.*share a bit"):
        load(root)
