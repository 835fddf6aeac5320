"""best over a lake with several pipelines' results per source: hand-derived cases for every kind of step,
and a random lake checked against a plain-Python walk of upstream's order (first step wins, per source)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from astra_lake import Lake
from astra_lake.ingest import synthetic as S
from astra_lake.pipelines.best import STEPS, select_best
from astra_lake.schema.flags import encode, flag_bad
from astra_lake.schema.loader import load_schema

PROGRAM_BIT = {t.program: t.bit for t in reversed(load_schema().targeting) if t.program in ("mwm_ob", "mwm_yso")}


def target_flags(programs: list[str]) -> bytes:
    value = bytearray(64)
    for p in programs:
        bit = PROGRAM_BIT[p]
        value[bit // 8] |= 1 << (bit % 8)
    return bytes(value)


def with_columns(table: pa.Table, **columns: object) -> pa.Table:
    for name, values in columns.items():
        i = table.schema.get_field_index(name)
        table = table.set_column(i, name, pa.array(values, type=table.schema.field(name).type))
    return table


def build_lake(path, programs: list[list[str]], apogee_ids: list[int], boss_ids: list[int]) -> Lake:
    lake = Lake.init(path)
    src = S.sources(len(programs), seed=1)
    lake.write("source", with_columns(src, sdss5_target_flags=[target_flags(p) for p in programs]))
    for table, ids in (("apogee_star", apogee_ids), ("boss_combined", boss_ids)):
        for batch in S.spectra(table, np.array(ids, dtype=np.int64), seed=len(ids)):
            lake.write(table, batch)
    return lake


def spectra_of(con, table: str) -> pa.Table:
    return con.sql(f"SELECT spectrum_pk, sdss_id, snr FROM {table} ORDER BY spectrum_pk").to_arrow_table()


def add_results(lake: Lake, pipeline: str, spectrum_pks: list[int], flags: list[int], seed: int) -> None:
    n = len(spectrum_pks)
    res = S.results(pipeline, np.array(spectrum_pks, dtype=np.int64), seed=seed)
    flag_col = "result_flags"
    lake.upsert(pipeline, with_columns(res, **{flag_col: flags, "teff": 1000.0 + seed * 100 + np.arange(n)}))


@pytest.fixture(scope="module")
def hand_lake(tmp_path_factory) -> Lake:
    """Sources 1..6: 1 mwm_ob, 2 mwm_yso, 3-6 no program. Source 3 has two APOGEE coadds."""
    lake = build_lake(
        tmp_path_factory.mktemp("best") / "lake",
        [["mwm_ob"], ["mwm_yso"], [], [], [], []],
        apogee_ids=[1, 2, 3, 3, 4, 5, 6],
        boss_ids=[1, 2, 3, 4, 5, 6],
    )
    con = lake.connect()
    ap = spectra_of(con, "apogee_star").to_pylist()
    bo = spectra_of(con, "boss_combined").to_pylist()
    ap_of = {}
    for row in ap:
        ap_of.setdefault(row["sdss_id"], []).append(row["spectrum_pk"])
    bo_of = {row["sdss_id"]: row["spectrum_pk"] for row in bo}
    bad_aspcap = encode("aspcap", ["flag_high_rchi2"])
    assert flag_bad("aspcap", bad_aspcap)
    add_results(lake, "snow_white", [bo_of[6]], [0], seed=1)
    add_results(lake, "bossnet", [bo_of[1], bo_of[5]], [0, 2], seed=2)
    aspcap_pks = [ap_of[1][0], ap_of[2][0], *ap_of[3], ap_of[4][0]]
    add_results(lake, "aspcap", aspcap_pks, [0, 0, 0, 0, bad_aspcap], seed=3)
    add_results(lake, "apogeenet", [ap_of[2][0], ap_of[5][0]], [0, 2], seed=4)
    add_results(lake, "astronn", [ap_of[3][0], ap_of[4][0]], [0, 0], seed=5)
    add_results(lake, "slam", [bo_of[4]], [1], seed=6)
    return lake


def test_each_source_gets_the_first_step_it_satisfies(hand_lake):
    con = hand_lake.connect()
    got = select_best(con)
    by_source = {r["sdss_id"]: r for r in got.to_pylist()}
    assert sorted(by_source) == [1, 2, 3, 4, 5, 6]  # one row per source
    assert by_source[6]["pipeline"] == "snow_white"  # step 1 beats everything
    assert by_source[1]["pipeline"] == "bossnet"  # mwm_ob: BOSSNet (flags 0) before ASPCAP
    assert by_source[2]["pipeline"] == "apogeenet"  # mwm_yso: APOGEENet (flags 0) before ASPCAP
    assert by_source[3]["pipeline"] == "aspcap"  # good ASPCAP before AstroNN
    assert by_source[4]["pipeline"] == "astronn"  # ASPCAP flag_bad, SLAM flagged: AstroNN
    assert by_source[5]["pipeline"] == "apogeenet"  # everything flagged: APOGEENet, any result

    snr = {r["spectrum_pk"]: r["snr"] for r in spectra_of(con, "apogee_star").to_pylist()}
    s3 = by_source[3]
    others = [pk for pk, v in snr.items() if v < snr[s3["spectrum_pk"]]]
    assert snr[s3["spectrum_pk"]] == max(v for pk, v in snr.items() if pk == s3["spectrum_pk"] or pk in others)
    chosen = con.sql(f"SELECT task_pk, teff, result_flags FROM aspcap WHERE spectrum_pk = {s3['spectrum_pk']}")
    chosen = chosen.to_arrow_table().to_pylist()[0]
    assert s3["result_task_pk"] == chosen["task_pk"] and s3["teff"] == pytest.approx(chosen["teff"])
    assert s3["pipeline_flags"] == chosen["result_flags"]
    assert s3["snr"] == pytest.approx(snr[s3["spectrum_pk"]])  # spectrum metadata joined in

    bn = con.sql("SELECT task_pk, bn_v_r FROM bossnet WHERE result_flags = 0").to_arrow_table().to_pylist()[0]
    assert by_source[1]["result_task_pk"] == bn["task_pk"]
    assert by_source[1]["boss_net_v_rad"] == pytest.approx(bn["bn_v_r"], nan_ok=True)
    assert got.schema.field("teff").type == pa.float32() and got.schema.field("pipeline_flags").type == pa.int64()


def test_ties_are_deterministic_and_independent_of_write_order(hand_lake):
    con = hand_lake.connect()
    a = select_best(con)
    b = select_best(hand_lake.connect())
    assert repr(a.to_pylist()) == repr(b.to_pylist())  # repr: NaN equals NaN
    only_boss = select_best(con, spectrum_tables=["boss_combined"])
    assert set(only_boss.column("pipeline").to_pylist()) == {"snow_white", "bossnet"}
    none = select_best(con, v_astra_major_minor=7)
    assert none.num_rows == 0


def python_best(con) -> dict[int, tuple[str, int]]:
    """Upstream's loop, written plainly: walk the steps, take every unchosen source's best candidate."""

    def rows(query: str) -> list[dict]:
        return con.sql(query).to_arrow_table().to_pylist()

    programs = {
        r["source_pk"]: r["programs"]
        for r in rows(
            "SELECT s.source_pk, list(DISTINCT t.program) AS programs FROM source s, sdss5_targeting t "
            "WHERE sdss5_target_bit(s.sdss5_target_flags, t.bit) GROUP BY 1"
        )
    }
    snr = {r["spectrum_pk"]: r["snr"] for r in rows("SELECT spectrum_pk, snr FROM spectra")}
    chosen: dict[int, tuple[str, int]] = {}
    for step in STEPS:
        ok = []
        for r in rows(f"SELECT task_pk, source_pk, spectrum_pk, v_astra, result_flags FROM {step.pipeline}"):
            if r["source_pk"] in chosen or (step.program and step.program not in programs.get(r["source_pk"], [])):
                continue
            if step.where == "r.result_flags = 0" and r["result_flags"] != 0:
                continue
            if step.where == "NOT r.flag_bad" and flag_bad(step.pipeline, r["result_flags"], r["v_astra"]) is not False:
                continue
            ok.append(r)
        ok.sort(key=lambda r: (-r["v_astra"], -(snr.get(r["spectrum_pk"]) or -np.inf), r["spectrum_pk"], r["task_pk"]))
        for r in ok:
            chosen.setdefault(r["source_pk"], (step.pipeline, r["task_pk"]))
    return chosen


def test_random_lake_matches_a_python_walk_of_the_steps(tmp_path):
    rng = np.random.default_rng(5)
    n = 40
    programs = [[p for p in ("mwm_ob", "mwm_yso") if rng.random() < 0.25] for _ in range(n)]
    apogee_ids = sorted(rng.choice(np.arange(1, n + 1), 50).tolist())
    boss_ids = sorted(rng.choice(np.arange(1, n + 1), 30, replace=False).tolist())  # one BOSS coadd per source
    lake = build_lake(tmp_path / "lake", programs, apogee_ids, boss_ids)
    con = lake.connect()
    ap = spectra_of(con, "apogee_star").column("spectrum_pk").to_pylist()
    bo = spectra_of(con, "boss_combined").column("spectrum_pk").to_pylist()
    for seed, (pipeline, pool) in enumerate(
        [("aspcap", ap), ("apogeenet", ap), ("astronn", ap), ("bossnet", bo), ("slam", bo), ("snow_white", bo)], start=10
    ):
        pks = sorted(rng.choice(pool, size=min(len(pool), {"snow_white": 3}.get(pipeline, 25)), replace=False).tolist())
        flags = np.where(rng.random(len(pks)) < 0.5, 0, 1 << rng.integers(0, 4, len(pks))).tolist()
        add_results(lake, pipeline, pks, flags, seed=seed)
    con = lake.connect()
    got = select_best(con)
    want = python_best(con)
    assert got.num_rows == len(want) == pc.count_distinct(got.column("source_pk")).as_py()
    assert {r["source_pk"]: (r["pipeline"], r["result_task_pk"]) for r in got.to_pylist()} == want
    assert len({p for p, _ in want.values()}) >= 4  # the random lake exercises several steps
