"""Schema evolution: a lake written with one data_schema revision, migrated to the next.

Revision 2 (a copy of the package's data_schema/ edited in tmp) renames ``source.tic_v8_id`` to ``tic_id``,
widens ``source.n_associated`` from int32 to int64, adds ``source.mig_note`` and a table ``mig_log``, gives
AstroNN's flags a new bit and a new flag_bad rule (any of flag_uncertain_teff instead of all three).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.errors import SchemaMismatchError
from astra_lake.ingest import synthetic as S
from astra_lake.lake.migrate import widens
from astra_lake.lake.schemas import declarations, from_declarations, schema_hash
from astra_lake.schema.loader import load_schema, schema_dir

PACKAGE_SCHEMA = schema_dir()  # revision 1: the package's own data_schema/
# AstroNN result_flags: bit 0 logg, 1 teff, 2 fe_h uncertain. Old flag_bad: all three; new: teff.
FLAGS = [0, 2, 7, 1, 4, 6, 3, 2048]
OLD_BAD = [False, False, True, False, False, False, False, False]
NEW_BAD = [False, True, True, False, False, True, True, False]


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) >= 1, old
    path.write_text(text.replace(old, new, 1))


def revision(tmp: Path, name: str = "rev2", version: int = 2) -> Path:
    """A copy of the package's data_schema/ at ``version`` (the edits below unless a test adds its own)."""
    out = tmp / name
    shutil.copytree(PACKAGE_SCHEMA, out, ignore=shutil.ignore_patterns("generated"))
    _edit(out / "common.yaml", "schema_version: 1", f"schema_version: {version}")
    return out


def revision2(tmp: Path) -> Path:
    out = revision(tmp)
    src = out / "tables" / "source.yaml"
    _edit(src, "- name: tic_v8_id\n  type: int64", "- name: tic_id\n  renamed_from: tic_v8_id\n  type: int64")
    _edit(src, "- name: n_associated\n  type: int32", "- name: n_associated\n  type: int64")
    _edit(src, "- name: healpix\n", "- name: mig_note\n  type: string\n  description: Added by revision 2\n- name: healpix\n")
    nn = out / "tables" / "astronn.yaml"
    _edit(
        nn,
        "      description: Exception raised when loading spectra\n    flag_warn: any_bit\n    flag_bad:\n      all_of:\n"
        "      - flag_uncertain_logg\n      - flag_uncertain_teff\n      - flag_uncertain_fe_h\n",
        "      description: Exception raised when loading spectra\n    - bit: 12\n      name: flag_migrated\n"
        "      description: A bit revision 2 adds\n    flag_warn: any_bit\n    flag_bad:\n      any_of:\n"
        "      - [flag_uncertain_teff]\n",
    )
    (out / "tables" / "mig_log.yaml").write_text(
        "name: mig_log\nkind: log\ndescription: A table revision 2 adds\nnatural_key:\n- note_id\ncolumns:\n"
        "- {name: note_id, type: int64, nullable: false, description: Note identifier}\n"
    )
    return out


@pytest.fixture()
def use_schema(monkeypatch: pytest.MonkeyPatch) -> Iterator[object]:
    """``use_schema(dir)`` makes ``dir`` the package's data_schema/ (None: the real one)."""

    def use(directory: Path | None) -> None:
        if directory is None:
            monkeypatch.delenv("ASTRA_LAKE_SCHEMA_DIR", raising=False)
        else:
            monkeypatch.setenv("ASTRA_LAKE_SCHEMA_DIR", str(directory))

    yield use


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


def _build(path: Path) -> Lake:
    """Revision-1 lake: 40 sources, 8 APOGEE spectra, 8 AstroNN results; tag v1 after the results, then
    an upsert replacing 5 sources and tag v2."""
    lake = Lake.init(path)
    src = S.sources(40, seed=1)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy()[:8], seed=2):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    res = S.results("astronn", pks, seed=3)
    res = res.set_column(res.column_names.index("result_flags"), "result_flags", pa.array(FLAGS, pa.int64()))
    lake.upsert("astronn", res)
    lake.tag("v1")
    lake.upsert("source", S.sources(5, seed=9))
    lake.tag("v2")
    return lake


SOURCE_Q = "SELECT sdss_id, tic_v8_id, n_associated, plx, ra FROM source ORDER BY sdss_id"
BAD_Q = "SELECT flag_bad FROM astronn ORDER BY spectrum_pk"


@pytest.fixture(scope="module")
def _migrated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A revision-1 lake migrated to revision 2, with what was read before and seen on the way."""
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp("migrate")
    rev2 = revision2(tmp)
    mp.delenv("ASTRA_LAKE_SCHEMA_DIR", raising=False)
    lake = _build(tmp / "lake")
    before = {t: lake.sql(SOURCE_Q, t) for t in ("v1", "v2")}
    bad_before = lake.sql(BAD_Q).column(0).to_pylist()
    old_hash = schema_hash(load_schema())
    extra = S.sources(2, seed=4, first_sdss_id=900)
    mp.setenv("ASTRA_LAKE_SCHEMA_DIR", str(rev2))
    opened = Lake(lake.path)
    with pytest.raises(SchemaMismatchError) as refused_write:
        opened.upsert("source", S.sources(2, seed=4, first_sdss_id=900))
    head_before_migrate = opened.sql(SOURCE_Q).num_rows
    files = _digest(lake.path)
    dry = opened.migrate(dry_run=True)
    unchanged = _digest(lake.path) == files
    plan = opened.migrate()
    with pytest.raises(SchemaMismatchError) as stale:  # a process that opened the lake before the migration
        lake.write("source", extra)
    mp.undo()
    return {
        "rev2": rev2,
        "lake": opened,
        "before": before,
        "bad_before": bad_before,
        "dry": dry,
        "plan": plan,
        "unchanged": unchanged,
        "refused_write": str(refused_write.value),
        "stale_write": str(stale.value),
        "head_before_migrate": head_before_migrate,
        "old_hash": old_hash,
        "new_hash": schema_hash(load_schema(rev2)),
    }


@pytest.fixture()
def migrated(_migrated: dict[str, object], monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """The migrated lake, with revision 2 as the package's data_schema/ for the test."""
    monkeypatch.setenv("ASTRA_LAKE_SCHEMA_DIR", str(_migrated["rev2"]))
    return _migrated


def test_declarations_round_trip() -> None:
    schema = load_schema()
    again = from_declarations(json.loads(json.dumps(declarations(schema))))
    assert again.tables == schema.tables and again.grids == schema.grids
    assert schema_hash(again) == schema_hash(schema)


def test_widening_rules() -> None:
    assert widens("int32", "int64") and widens("float32", "float64") and widens("int16", "float32")
    assert widens("fixed<float32,8575>", "fixed<float64,8575>")
    assert not widens("int64", "int32") and not widens("float64", "float32") and not widens("int64", "float64")
    assert not widens("fixed<float32,8575>", "fixed<float64,4648>") and not widens("string", "int64")


def test_plan_and_dry_run(migrated: dict[str, object]) -> None:
    dry, plan = migrated["dry"], migrated["plan"]
    assert migrated["unchanged"], "a dry run changed files of the lake"
    assert not dry.applied and plan.applied  # type: ignore[attr-defined]
    text = str(dry)
    assert f"data_schema revision 1 ({migrated['old_hash']}) -> 2 ({migrated['new_hash']})" in text
    for expected in (
        "source: rename column tic_v8_id -> tic_id [rewrites the table's files]",
        "source: widen column n_associated: int32 -> int64 [rewrites",
        "source: new column mig_note (string, null in stored rows)\n",
        "astronn: flags result_flags: new bits 12 (flag_migrated); flag_bad rule changed (no data change",
        "mig_log: new table (created by its first write)",
    ):
        assert expected in text, text
    assert "astronn: flags" in text and "astronn: rename" not in text and "REFUSED" not in text


def test_writes_wait_for_the_migration(migrated: dict[str, object]) -> None:
    assert "run `astra-lake migrate`" in str(migrated["refused_write"])
    assert f"migrated to data_schema {migrated['new_hash']} (revision 2) since it was opened" in str(migrated["stale_write"])
    assert migrated["head_before_migrate"] == 40  # the head reads with the lake's own schema meanwhile


def test_head_after_migration_keeps_every_value(migrated: dict[str, object]) -> None:
    lake: Lake = migrated["lake"]  # type: ignore[assignment]
    con = lake.connect()
    head = con.sql("SELECT sdss_id, tic_id, n_associated, plx, ra, mig_note FROM source ORDER BY sdss_id").to_arrow_table()
    old = migrated["before"]["v2"]  # type: ignore[index]
    assert head.schema.field("n_associated").type == pa.int64()
    assert head.column("sdss_id").to_pylist() == old.column("sdss_id").to_pylist()
    assert head.column("tic_id").to_pylist() == old.column("tic_v8_id").to_pylist()
    assert head.column("n_associated").to_pylist() == old.column("n_associated").to_pylist()
    assert np.array_equal(head.column("plx").to_numpy(), old.column("plx").to_numpy(), equal_nan=True)
    assert head.column("ra").to_pylist() == old.column("ra").to_pylist()
    assert head.column("mig_note").null_count == head.num_rows == 40
    assert con.sql(BAD_Q).to_arrow_table().column(0).to_pylist() == NEW_BAD  # the view follows the new rule
    assert migrated["bad_before"] == OLD_BAD
    assert con.sql("SELECT count(*) FROM astronn WHERE flag_migrated").fetchall() == [(0,)]


def test_every_tag_reads_with_its_own_schema(migrated: dict[str, object]) -> None:
    lake: Lake = migrated["lake"]  # type: ignore[assignment]
    for tag in ("v1", "v2"):
        con = lake.connect(tag)
        got = con.sql(SOURCE_Q).to_arrow_table()
        assert got.equals(migrated["before"][tag]), tag  # type: ignore[index]
        assert got.schema.field("n_associated").type == pa.int32()
        cols = con.sql("SELECT * FROM source LIMIT 0").columns
        assert "mig_note" not in cols and "tic_id" not in cols
        assert con.sql(BAD_Q).to_arrow_table().column(0).to_pylist() == OLD_BAD
    assert lake.sql(BAD_Q, lake.version).column(0).to_pylist() == NEW_BAD
    for version, expected in (("v1", OLD_BAD), (None, NEW_BAD)):  # Polars scans follow the same rules
        scanned = lake.scan("astronn", version).sort("spectrum_pk").select("flag_bad").collect()
        assert scanned.to_series().to_list() == expected, version


def test_a_release_of_an_old_tag_has_its_columns(migrated: dict[str, object], tmp_path: Path) -> None:
    lake: Lake = migrated["lake"]  # type: ignore[assignment]
    lake.release("r1", tag="v1", out=tmp_path / "r1", formats=("parquet",))
    import pyarrow.parquet as pq

    got = pq.read_table(tmp_path / "r1" / "parquet" / "source.parquet", columns=["sdss_id", "tic_v8_id"]).sort_by("sdss_id")
    assert got.column("tic_v8_id").to_pylist() == migrated["before"]["v1"].column("tic_v8_id").to_pylist()  # type: ignore[index]


def test_recorded_schema_and_log(migrated: dict[str, object]) -> None:
    lake: Lake = migrated["lake"]  # type: ignore[assignment]
    info = json.loads((lake.path / "lake.json").read_text())
    assert info["schema"] == migrated["new_hash"] and info["schema_version"] == 2
    assert info["migrations"][-1]["from"] == migrated["old_hash"]
    commits = lake.versions()
    assert commits[-1].operation == "migrate" and commits[-1].table == "source" and commits[-1].schema == migrated["new_hash"]
    assert {c.schema for c in commits[:-1]} == {migrated["old_hash"]}
    assert (lake.path / "_meta" / "schemas" / f"{migrated['old_hash']}.json").exists()
    assert lake.migrate(dry_run=True).current
    assert lake.info()["schema"] == {"hash": migrated["new_hash"], "revision": 2}


def test_writes_after_migration_use_the_new_columns(migrated: dict[str, object], tmp_path: Path) -> None:
    lake: Lake = migrated["lake"]  # type: ignore[assignment]
    new = S.sources(3, seed=5)  # replaces sources 1-3; the package's schema is revision 2 here: it has mig_note
    new = new.set_column(new.column_names.index("mig_note"), "mig_note", pa.array(["a", None, "c"]))
    lake.upsert("source", new)  # rewrites migrated files without the replaced rows
    lake.write("mig_log", {"note_id": [7, 8]})
    con = lake.connect()
    got = con.sql("SELECT sdss_id, mig_note FROM source WHERE sdss_id <= 4 ORDER BY sdss_id").fetchall()
    assert got == [(1, "a"), (2, None), (3, "c"), (4, None)]
    assert con.sql("SELECT count(*), count(tic_id) FROM source").fetchall() == [(40, 40)]
    assert con.sql("SELECT sum(note_id) FROM mig_log").fetchall() == [(15,)]
    old = lake.connect("v2")
    assert old.sql("SELECT count(*), count(tic_v8_id) FROM source").fetchall() == [(40, 40)]
    with pytest.raises(duckdb.CatalogException, match="mig_log"):
        old.sql("SELECT * FROM mig_log")  # that version's schema has no such table


def test_newer_lake_is_refused_by_an_older_package(tmp_path: Path, use_schema: object) -> None:
    use_schema(revision2(tmp_path))  # type: ignore[operator]
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(3, seed=1))
    use_schema(None)  # type: ignore[operator]
    with pytest.raises(SchemaMismatchError, match=r"data_schema revision 2 .*newer than this astra-lake's revision 1"):
        Lake(lake.path)
    from astra_lake.cli import app

    with pytest.raises(SystemExit) as exit_:
        app(["migrate", "--lake", str(lake.path), "--dry-run"])
    assert exit_.value.code == 1


REFUSALS = [
    (("- name: plx\n  type: float32\n  unit: mas\n  description: Parallax\n", ""), "source.plx: no longer declared, but 20"),
    (("- name: ra\n  type: float64", "- name: ra\n  type: float32"), "source.ra: type float64 -> float32 is not a widening"),
    (("- name: lead\n  type: string", "- name: lead\n  type: int64"), "source.lead: type string -> int64 is not a widening"),
    (
        ("- name: healpix\n", "- name: must\n  type: int32\n  nullable: false\n  description: required\n- name: healpix\n"),
        "source.must: new required column without a fill value, and the table has 20 rows",
    ),
    (("natural_key:\n- source_key", "natural_key:\n- sdss_id"), "source: natural_key changes from ('source_key',)"),
]


def test_changes_that_lose_data_are_refused(tmp_path: Path, use_schema: object) -> None:
    """Each refused change (a dropped column with values, narrowing, a type change, a new required
    column, a changed key) is one line naming table.column and why; the lake stays byte-identical."""
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(20, seed=1))
    files = _digest(lake.path)
    for i, (edit, reason) in enumerate(REFUSALS):
        rev = revision(tmp_path, f"rev{i}")
        _edit(rev / "tables" / "source.yaml", *edit)
        use_schema(rev)  # type: ignore[operator]
        for dry_run in (True, False):
            with pytest.raises(SchemaMismatchError, match="migration refused: " + re.escape(reason)) as err:
                Lake(lake.path).migrate(dry_run=dry_run)
            assert "\n" not in str(err.value)
    assert _digest(lake.path) == files
    rev = revision(tmp_path, "reordered")  # lead before healpix: the files are rewritten in the new order
    lead = "- name: lead\n  type: string\n  description: Lead catalog used for cross-match\n"
    _edit(rev / "tables" / "source.yaml", lead, "")
    _edit(rev / "tables" / "source.yaml", "- name: healpix\n", lead + "- name: healpix\n")
    use_schema(rev)  # type: ignore[operator]
    assert "source: reorder columns (as declared) [rewrites the table's files]" in str(Lake(lake.path).migrate(dry_run=True))


def test_cli_prints_the_plan(tmp_path: Path, use_schema: object, capsys: pytest.CaptureFixture[str]) -> None:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(4, seed=1))
    use_schema(revision2(tmp_path))  # type: ignore[operator]
    from astra_lake.cli import app

    for args, last in ((["--dry-run"], "dry run: nothing changed"), ([], "migrated"), ([], "nothing to migrate")):
        with pytest.raises(SystemExit) as exit_:
            app(["migrate", "--lake", str(lake.path), *args])
        out = capsys.readouterr().out
        assert exit_.value.code == 0 and out.strip().splitlines()[-1].endswith(last), out
    assert Lake(lake.path).sql("SELECT count(tic_id) FROM source").column(0)[0].as_py() == 4


TYPES = ["int16", "int32", "int64", "float32", "float64", "string", "bool"]
VALUES = {"int16": 7, "int32": -7, "int64": 2**40, "float32": 1.5, "float64": -2.25, "string": "v", "bool": True}


@settings(max_examples=2, deadline=None, phases=[Phase.generate], suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(new=st.lists(st.sampled_from(TYPES), min_size=1, max_size=4), rows=st.integers(1, 12))
def test_additive_columns_keep_every_value(tmp_path_factory: pytest.TempPathFactory, new: list[str], rows: int) -> None:
    """Any set of new nullable columns migrates, and every stored value reads back unchanged."""
    tmp = tmp_path_factory.mktemp("prop")
    mp = pytest.MonkeyPatch()
    try:
        mp.delenv("ASTRA_LAKE_SCHEMA_DIR", raising=False)
        lake = Lake.init(tmp / "lake")
        lake.write("source", S.sources(rows, seed=rows))
        before = lake.sql("SELECT * EXCLUDE (modified) FROM source ORDER BY source_pk")
        rev = revision(tmp)
        added = "".join(f"- name: extra_{i}\n  type: {t}\n  description: column {i}\n" for i, t in enumerate(new))
        _edit(rev / "tables" / "source.yaml", "- name: healpix\n", added + "- name: healpix\n")
        mp.setenv("ASTRA_LAKE_SCHEMA_DIR", str(rev))
        migrated = Lake(lake.path)
        files = _data_files(lake)
        assert "rewrites" not in str(migrated.migrate())
        assert _data_files(lake) == files  # a metadata-only change: no Parquet file written
        after = migrated.sql("SELECT * EXCLUDE (modified) FROM source ORDER BY source_pk")
        for name in before.column_names:  # NaN == NaN here: a value kept is the same bits
            kept, was = after.column(name), before.column(name)
            if pa.types.is_floating(was.type):
                assert np.array_equal(kept.to_numpy(), was.to_numpy(), equal_nan=True), name
            else:
                assert kept.to_pylist() == was.to_pylist(), name
        assert all(after.column(f"extra_{i}").null_count == rows for i in range(len(new)))
        first = S.sources(1, seed=rows)  # sdss_id 1 again: its stored row is replaced, with values
        for i, t in enumerate(new):
            first = first.set_column(first.column_names.index(f"extra_{i}"), f"extra_{i}", pa.array([VALUES[t]]))
        migrated.upsert("source", first)
        got = migrated.sql("SELECT * FROM source ORDER BY sdss_id")
        for i, t in enumerate(new):
            assert got.column(f"extra_{i}").to_pylist() == [VALUES[t]] + [None] * (rows - 1), t
    finally:
        mp.undo()


def _data_files(lake: Lake) -> set[str]:
    return {str(p.relative_to(lake.path)) for p in lake.path.rglob("*.parquet") if "_delta_log" not in p.parts}


def test_new_nullable_columns_evolve_without_a_rewrite(tmp_path: Path, use_schema: object) -> None:
    """A new nullable column is a Delta schema change only: no data file is written or removed, and every
    reader (SQL, Polars, spectra, batches, cone, LSDB, upsert, compaction, release) sees it, null in old rows."""
    lake = Lake.init(tmp_path / "lake", auto_compact_min_files=0)
    src = S.sources(12, seed=1)
    lake.write("source", src)
    for batch in S.spectra("apogee_star", src.column("sdss_id").to_numpy()[:4], seed=2):
        lake.write("apogee_star", batch)
    lake.tag("before")
    rev = revision(tmp_path)
    _edit(
        rev / "tables" / "source.yaml",
        "- name: healpix\n",
        "- name: evolved_x\n  type: float32\n  description: new\n- name: healpix\n",
    )
    _edit(
        rev / "tables" / "apogee_star.yaml",
        "- name: release\n",
        "- name: evolved_s\n  type: string\n  description: new\n- name: release\n",
    )
    use_schema(rev)  # type: ignore[operator]
    files, stored = _data_files(lake), {t: {f.path for f in lake.snapshot().files(t)} for t in ("source", "apogee_star")}
    plan = Lake(lake.path).migrate()
    text = str(plan)
    assert "source: new column evolved_x (float32, null in stored rows)" in text and "rewrites" not in text, text
    lake = Lake(lake.path)
    assert _data_files(lake) == files  # no Parquet file written
    assert {t: {f.path for f in lake.snapshot().files(t)} for t in stored} == stored  # nor removed
    assert lake.versions()[-1].operation == "migrate" and lake.versions()[-1].schema == schema_hash(load_schema(rev))

    con = lake.connect()
    assert con.sql("SELECT count(*), count(evolved_x), typeof(any_value(evolved_x)) FROM source").fetchall() == [(12, 0, "FLOAT")]
    assert con.sql("SELECT count(*), count(evolved_s) FROM apogee_star").fetchall() == [(4, 0)]
    x = lake.scan("source").select("evolved_x").collect().to_series()
    assert x.dtype == pl.Float32 and x.null_count() == 12
    sid = int(src.column("sdss_id")[0].as_py())
    spec = lake.spectra(sid, "apogee_star")
    assert spec.meta.column("evolved_s").null_count == len(spec) >= 1
    looked = lake.lookup("apogee_star", sid, columns=["spectrum_pk", "evolved_s"])
    assert looked.num_rows == len(spec) and looked.column("evolved_s").null_count == len(spec)
    blocks = list(lake.spectra_batches("apogee_star", columns=["spectrum_pk", "evolved_s"], batch_rows=3))
    assert sum(len(b) for b in blocks) == 4 and all(b.meta.column("evolved_s").null_count == len(b) for b in blocks)
    ra, dec = src.column("ra")[0].as_py(), src.column("dec")[0].as_py()
    near = lake.cone(ra, dec, 0.01, columns=["sdss_id", "evolved_x"])
    assert sid in near.column("sdss_id").to_pylist() and near.column("evolved_x").null_count == near.num_rows
    assert near.schema.field("evolved_x").type == pa.float32()

    frame = lake.lsdb("apogee_star", columns=["spectrum_pk", "evolved_s"]).compute()
    assert len(frame) == 4 and frame["evolved_s"].isna().all()

    # an upsert of 2 existing and 2 new sources, with values: carried rows gain the column as null
    new = S.sources(2, seed=7, first_sdss_id=500)
    again = S.sources(2, seed=1)  # sdss_id 1 and 2: stored
    rows = pa.concat_tables([again, new])
    rows = rows.set_column(rows.column_names.index("evolved_x"), "evolved_x", pa.array([1.5, None, 2.5, 3.5], pa.float32()))
    lake.upsert("source", rows)
    q = "SELECT sdss_id, evolved_x FROM source WHERE sdss_id IN (1, 2, 3, 500, 501) ORDER BY sdss_id"
    want = [(1, 1.5), (2, None), (3, None), (500, 2.5), (501, 3.5)]
    assert lake.connect().sql(q).fetchall() == want
    assert lake.lookup("source", 1, columns=["sdss_id", "evolved_x"]).to_pylist() == [{"sdss_id": 1, "evolved_x": 1.5}]
    lake.compact("source")
    assert lake.connect().sql(q).fetchall() == want
    assert lake.connect().sql("SELECT count(*), count(evolved_x) FROM source").fetchall() == [(14, 3)]
    scanned = lake.scan("source").filter(pl.col("sdss_id").is_in([1, 2, 3, 500, 501])).sort("sdss_id")
    assert scanned.select("evolved_x").collect().to_series().to_list() == [w for _, w in want]

    # the old tag reads with its own schema; a release of the head has the column
    assert "evolved_x" not in lake.connect("before").sql("SELECT * FROM source LIMIT 0").columns
    assert "evolved_x" not in lake.scan("source", "before").collect_schema().names()
    lake.tag("after")
    lake.release("r", tag="after", out=tmp_path / "r", formats=("parquet",))
    import pyarrow.parquet as pq

    out = pq.read_table(tmp_path / "r" / "parquet" / "source.parquet", columns=["sdss_id", "evolved_x"]).sort_by("sdss_id")
    x_out = out.column("evolved_x").to_numpy(zero_copy_only=False)  # a release writes null floats as NaN
    assert out.num_rows == 14 and np.array_equal(x_out, [1.5] + [np.nan] * 11 + [2.5, 3.5], equal_nan=True)


def test_a_new_column_with_a_fill_rewrites_the_files(tmp_path: Path, use_schema: object) -> None:
    """A file lacking a column reads as null, so a declared fill is written into the stored rows."""
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(3, seed=1))
    files = _data_files(lake)
    rev = revision(tmp_path)
    _edit(
        rev / "tables" / "source.yaml",
        "- name: healpix\n",
        "- name: filled\n  type: int32\n  fill: -1\n  description: new\n- name: healpix\n",
    )
    use_schema(rev)  # type: ignore[operator]
    plan = Lake(lake.path).migrate()
    assert "source: new column filled (int32, -1 in stored rows) [rewrites the table's files]" in str(plan)
    assert _data_files(lake) - files and not (lake.path / "source" / "evolved_columns.json").exists()
    assert Lake(lake.path).sql("SELECT filled FROM source").column(0).to_pylist() == [-1, -1, -1]
