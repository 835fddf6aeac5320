"""import-postgres against a real PostgreSQL server holding tables shaped like Astra's (peewee DDL).

Rows carry NULLs, NaN and infinities, flags with bits 62 and 63, 32-bit flags that arrived negative,
float arrays with NaN and NULL elements, bytea, text and integer ``v_astra``; every imported value is
compared with the Python value that was inserted.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from astra_lake import Lake
from astra_lake.errors import DatabaseImportError

BIT62, BIT63 = 2**62, -(2**63)
FLAGS = [0, 5, BIT62, BIT63, BIT62 | BIT63 | 1, None]

DDL = """
CREATE TABLE source (
    pk serial PRIMARY KEY, sdss_id bigint UNIQUE, sdss4_apogee_id text UNIQUE, gaia_dr3_source_id bigint UNIQUE,
    catalogid bigint, healpix integer, ra real, dec real, g_mag real, bp_mag real,
    sdss5_target_flags bytea, sdss4_apogee_target1_flags bigint DEFAULT 0, sdss4_apogee_member_flags bigint DEFAULT 0,
    n_neighborhood integer DEFAULT -1, created timestamp, modified timestamp);
CREATE TABLE spectrum (pk serial PRIMARY KEY, spectrum_flags bigint DEFAULT 0);
CREATE TABLE apogee_coadded_spectrum_in_ap_star (
    pk serial PRIMARY KEY, source_pk integer REFERENCES source (pk), spectrum_pk integer UNIQUE REFERENCES spectrum (pk),
    created timestamp, modified timestamp, star_pk bigint UNIQUE, release text, filetype text, apred text, apstar text,
    obj text, telescope text, healpix integer, field text, prefix text, min_mjd integer, max_mjd integer, snr real,
    spectrum_flags bigint DEFAULT 0);
CREATE TABLE aspcap (
    task_pk serial PRIMARY KEY, source_pk integer REFERENCES source (pk), spectrum_pk integer NOT NULL REFERENCES spectrum (pk),
    v_astra integer, created timestamp, modified timestamp, t_elapsed real, t_overhead real, tag text DEFAULT '',
    v_astra_major_minor integer GENERATED ALWAYS AS (v_astra / 1000) STORED,
    teff real, e_teff real, logg real, fe_h real, result_flags bigint DEFAULT 0, irfm_teff_flags bigint, coarse_rchi2 real,
    UNIQUE (spectrum_pk, v_astra_major_minor));
CREATE TABLE astro_nn_dist (
    task_pk serial PRIMARY KEY, source_pk integer, spectrum_pk integer NOT NULL, v_astra text, created timestamp,
    t_elapsed real, t_overhead real, tag text, k_mag real, ebv real, "A_k_mag" real, "L_fakemag" real, "e_L_fakemag" real,
    dist real, e_dist real, result_flags bigint);
CREATE TABLE line_forest (
    task_pk serial PRIMARY KEY, source_pk integer, spectrum_pk integer NOT NULL, v_astra integer, created timestamp,
    modified timestamp, eqw_h_alpha real, abs_h_alpha real, eqw_percentiles_h_alpha real[], abs_percentiles_h_alpha real[]);
"""
T0 = dt.datetime(2024, 3, 1, 12, 0, 0, 123456)
N_SOURCES, N_SPECTRA = 40, 30


def astra_rows() -> dict[str, list[dict[str, Any]]]:
    """Deterministic Astra rows; identities deliberately not starting at 1."""
    rng = np.random.default_rng(17)
    sources = []
    for i in range(N_SOURCES):
        sources.append(
            {
                "pk": 100 + i,
                "sdss_id": 10_000_000 + i if i % 5 else None,
                "sdss4_apogee_id": f"2M{i:08d}+0000000" if i % 5 == 0 else None,
                "gaia_dr3_source_id": 4_000_000_000_000_000_000 + i if i % 3 else None,
                "catalogid": 27_021_600_000_000_000 + i,
                "healpix": int(rng.integers(0, 196_608)),
                "ra": float(rng.uniform(0, 360)),
                "dec": float(rng.uniform(-80, 80)),
                "g_mag": [float(rng.uniform(8, 17)), math.nan, None, math.inf][i % 4],
                "bp_mag": None,
                "sdss5_target_flags": bytes([i % 256, 0, 1 << (i % 8)]) if i % 2 else None,
                "sdss4_apogee_target1_flags": [0, -(2**31), -1, 2**40, -(2**40)][i % 5],
                "sdss4_apogee_member_flags": [0, 2**61, BIT63][i % 3],
                "n_neighborhood": i % 4 - 1,
                "created": T0 + dt.timedelta(days=i),
                "modified": T0 + dt.timedelta(days=i + 1),
            }
        )
    with_spectra = [s for s in sources if s["sdss_id"] is not None][:N_SPECTRA]
    spectra = []
    for j, s in enumerate(with_spectra):
        spectra.append(
            {
                "pk": 1 + j,
                "source_pk": s["pk"],
                "spectrum_pk": 1000 + j,
                "created": T0 - dt.timedelta(hours=j),
                "modified": T0,
                "star_pk": 555 + j,
                "release": "sdss5",
                "filetype": "apStar",
                "apred": "1.4",
                "apstar": "stars",
                "obj": f"2M{j:08d}",
                "telescope": ["apo25m", "lco25m"][j % 2],
                "healpix": s["healpix"],
                "field": "",
                "prefix": "",
                "min_mjd": 59000 + j,
                "max_mjd": None if j % 4 == 0 else 59100 + j,
                "snr": [float(rng.uniform(5, 300)), math.nan, None][j % 3],
                "spectrum_flags": FLAGS[j % len(FLAGS)],
            }
        )
    aspcap, astronn_dist, line_forest = [], [], []
    for j, sp in enumerate(spectra):
        for k, v_astra in enumerate((6000, 8000)):
            aspcap.append(
                {
                    "task_pk": 501 + 2 * j + k,
                    "source_pk": sp["source_pk"],
                    "spectrum_pk": sp["spectrum_pk"],
                    "v_astra": v_astra,
                    "created": T0 + dt.timedelta(minutes=j, seconds=k),
                    "modified": T0,
                    "t_elapsed": float(rng.uniform(0, 3)),
                    "t_overhead": None,
                    "tag": "" if j % 2 else "dr19",
                    "teff": [float(rng.uniform(3500, 7000)), math.nan, None, -math.inf][(j + k) % 4],
                    "e_teff": float(rng.uniform(10, 100)),
                    "logg": float(rng.uniform(0, 5)),
                    "fe_h": None,
                    "result_flags": FLAGS[(j + k) % len(FLAGS)],
                    "irfm_teff_flags": 2**62 + j,
                    "coarse_rchi2": 1.5,
                }
            )
        astronn_dist.append(
            {
                "task_pk": 1 + j,
                "source_pk": sp["source_pk"],
                "spectrum_pk": sp["spectrum_pk"],
                "v_astra": "0.6.0",
                "created": T0,
                "t_elapsed": None,
                "t_overhead": None,
                "tag": "",
                "k_mag": 9.5,
                "ebv": 0.1,
                "A_k_mag": float(rng.uniform(0, 1)),
                "L_fakemag": [float(rng.uniform(1, 9)), math.nan][j % 2],
                "e_L_fakemag": float(rng.uniform(0, 1)),
                "dist": float(rng.uniform(100, 5000)),
                "e_dist": None if j % 3 == 0 else float(rng.uniform(1, 100)),
                "result_flags": [BIT63, 2048, 0][j % 3],
            }
        )
        line_forest.append(
            {
                "task_pk": 1 + j,
                "source_pk": sp["source_pk"],
                "spectrum_pk": sp["spectrum_pk"],
                "v_astra": 8000,
                "created": T0,
                "modified": T0,
                "eqw_h_alpha": float(rng.normal()),
                "abs_h_alpha": None,
                "eqw_percentiles_h_alpha": [[0.1, 0.5, 0.9], [math.nan, 1.0, None], [], None][j % 4],
                "abs_percentiles_h_alpha": [float(x) for x in rng.normal(size=3)],
            }
        )
    return {
        "source": sources,
        "spectrum": [{"pk": sp["spectrum_pk"], "spectrum_flags": 0} for sp in spectra],
        "apogee_coadded_spectrum_in_ap_star": spectra,
        "aspcap": aspcap,
        "astro_nn_dist": astronn_dist,
        "line_forest": line_forest,
    }


def fill(db: Any, rows: dict[str, list[dict[str, Any]]]) -> None:
    db.execute(DDL)
    for table, values in rows.items():
        db.insert(table, values)


# What the lake must hold: Astra's values as stored (real -> float32), under the lake's names.
LAKE = {
    "source": ("source", "source_pk", {"pk": "source_pk"}),
    "apogee_coadded_spectrum_in_ap_star": ("apogee_star", "spectrum_pk", {}),
    "aspcap": ("aspcap", "task_pk", {}),
    "astro_nn_dist": (
        "astronn_dist",
        "task_pk",
        {"A_k_mag": "a_k_mag", "e_L_fakemag": "L_fakemag_err", "dist": "nn_dist", "e_dist": "nn_dist_err"},
    ),
    "line_forest": ("line_forest", "task_pk", {}),
}
NOT_IMPORTED = {"pk", "modified", "coarse_rchi2", "k_mag", "ebv"}  # table-local pk, writer's modified, Astra-only
REAL = {"ra", "dec", "g_mag", "bp_mag", "snr", "t_elapsed", "t_overhead", "teff", "e_teff", "logg", "fe_h", "eqw_h_alpha"}
REAL |= {"abs_h_alpha", "A_k_mag", "L_fakemag", "e_L_fakemag", "dist", "e_dist"}


def expected(astra_table: str, row: dict[str, Any]) -> dict[str, Any]:
    _, _, renames = LAKE[astra_table]
    out = {}
    for col, value in row.items():
        if col in NOT_IMPORTED and col not in renames:
            continue
        if col in REAL and value is not None:
            value = float(np.float32(value))
        elif col.endswith("percentiles_h_alpha") and value is not None:
            value = [None if x is None else float(np.float32(x)) for x in value]
        elif isinstance(value, dt.datetime):
            value = value.replace(tzinfo=dt.UTC)
        elif col == "v_astra" and isinstance(value, str):
            value = 6000 if value == "0.6.0" else pytest.fail(value)
        elif col == "sdss4_apogee_target1_flags" and value is not None and -(2**31) <= value < 0:
            value += 2**32  # a 32-bit pattern that arrived as a negative signed integer
        out[renames.get(col, col)] = value
    return out


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def assert_lake_holds(lake: Lake, rows: dict[str, list[dict[str, Any]]]) -> None:
    for astra_table, (table, ident, _) in LAKE.items():
        want = {r[ident]: r for r in (expected(astra_table, r) for r in rows[astra_table])}
        got = {r[ident]: r for r in lake.sql(f"SELECT * FROM {table}").to_pylist()}
        assert set(got) == set(want), table
        for key, w in want.items():
            bad = {c: (got[key][c], v) for c, v in w.items() if not same(got[key][c], v)}
            assert not bad, f"{table} {ident}={key}: (lake, astra) differ: {bad}"


def test_import_keeps_every_value_and_identity(astra_db: Any, tmp_path: Path) -> None:
    rows = astra_rows()
    fill(astra_db, rows)
    lake = Lake.init(tmp_path / "lake")
    summary = lake.import_postgres(astra_db.dsn)
    assert summary.rows == {"source": 40, "apogee_star": 30, "aspcap": 60, "astronn_dist": 30, "line_forest": 30}
    assert summary.skipped_columns["aspcap"] == ["coarse_rchi2"]
    assert sorted(summary.skipped_columns["astronn_dist"]) == ["ebv", "k_mag"]
    assert "the_payne" in summary.missing_tables
    assert_lake_holds(lake, rows)
    # results took sdss_id and position from their spectrum's source
    got = lake.sql("SELECT a.sdss_id, s.sdss_id AS src FROM aspcap a JOIN source s USING (source_pk)").to_pylist()
    assert got and all(r["sdss_id"] == r["src"] is not None for r in got)
    # flags are the same 64-bit patterns in SQL: bit 63 and bit 62 tests
    n63 = lake.sql("SELECT count(*) FROM aspcap WHERE result_flags < 0").column(0)[0].as_py()
    assert n63 == sum(1 for r in rows["aspcap"] if r["result_flags"] is not None and r["result_flags"] < 0)
    # identities minted after the import never collide with Astra's
    lake.upsert("aspcap", {"spectrum_pk": [1000], "v_astra": np.array([9000], np.int32)})
    assert lake.sql("SELECT max(task_pk) FROM aspcap").column(0)[0].as_py() == 560 + 1


def test_reimport_is_idempotent(astra_db: Any, tmp_path: Path) -> None:
    rows = astra_rows()
    fill(astra_db, rows)
    lake = Lake.init(tmp_path / "lake")
    lake.import_postgres(astra_db.dsn, tables=["source", "apogee_star", "aspcap"])
    tables = ("source", "apogee_star", "aspcap")
    before = {t: lake.sql(f"SELECT * EXCLUDE (modified) FROM {t} ORDER BY 2").to_pylist() for t in tables}
    again = lake.import_postgres(astra_db.dsn, tables=["source", "apogee_star", "aspcap"])
    assert again.rows == {"source": 40, "apogee_star": 30, "aspcap": 60}
    for t, old in before.items():
        now = lake.sql(f"SELECT * EXCLUDE (modified) FROM {t} ORDER BY 2").to_pylist()
        assert len(now) == len(old) and all(same(list(a.values()), list(b.values())) for a, b in zip(now, old, strict=True)), t


def test_where_selects_rows(astra_db: Any, tmp_path: Path) -> None:
    fill(astra_db, astra_rows())
    lake = Lake.init(tmp_path / "lake")
    lake.import_postgres(astra_db.dsn, tables=["source", "apogee_star"])
    summary = lake.import_postgres(astra_db.dsn, tables=["aspcap"], where="v_astra >= 8000")
    assert summary.rows == {"aspcap": 30}
    assert lake.sql("SELECT DISTINCT v_astra FROM aspcap").column(0).to_pylist() == [8000]


def test_missing_table_is_a_one_line_error(astra_db: Any, tmp_path: Path) -> None:
    fill(astra_db, astra_rows())
    lake = Lake.init(tmp_path / "lake")
    with pytest.raises(DatabaseImportError) as err:
        lake.import_postgres(astra_db.dsn, tables=["the_payne"])
    msg = str(err.value)
    assert "the_payne" in msg and "does not exist" in msg and "\n" not in msg
    assert lake.version == 0  # nothing written


def test_bad_where_is_a_one_line_error(astra_db: Any, tmp_path: Path) -> None:
    fill(astra_db, astra_rows())
    lake = Lake.init(tmp_path / "lake")
    with pytest.raises(DatabaseImportError, match=r'^"public"\."source": column "no_such_column" does not exist$') as err:
        lake.import_postgres(astra_db.dsn, tables=["source"], where="no_such_column > 1")
    assert "\n" not in str(err.value)


def test_lake_identities_that_astra_also_uses_are_refused(astra_db: Any, tmp_path: Path) -> None:
    rows = astra_rows()
    fill(astra_db, rows)
    lake = Lake.init(tmp_path / "lake")
    # the lake minted source_pk 1..120 for its own sources before the import: Astra's pk 100.. clash
    lake.write("source", {"sdss_id": np.arange(1, 121) + 90_000_000, "ra": np.full(120, 10.0), "dec": np.full(120, 5.0)})
    with pytest.raises(DatabaseImportError, match="source_pk=100") as err:
        lake.import_postgres(astra_db.dsn, tables=["source"])
    assert "\n" not in str(err.value)
    assert lake.sql("SELECT count(*) FROM source").column(0)[0].as_py() == 120


def test_astra_sources_the_lake_cannot_tell_apart_are_refused(astra_db: Any, tmp_path: Path) -> None:
    rows = astra_rows()
    for r in rows["source"][:2]:  # no sdss_id or APOGEE id, one catalogid: one lake source_key for two pks
        r.update(sdss_id=None, sdss4_apogee_id=None, catalogid=42)
    fill(astra_db, rows)
    lake = Lake.init(tmp_path / "lake")
    with pytest.raises(DatabaseImportError, match="source_pk=100 and 101 have the same source_key") as err:
        lake.import_postgres(astra_db.dsn, tables=["source"])
    assert "\n" not in str(err.value) and lake.version == 0


KILLED_RUN = textwrap.dedent(
    """
    import os, signal, sys
    from astra_lake import Lake

    def progress(table, done, total):
        if table == "aspcap" and done >= 20:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup of any kind runs

    Lake(sys.argv[1]).import_postgres(sys.argv[2], commit_rows=10, progress=progress)
    """
)


def test_killed_import_resumes_after_its_last_commit(astra_db: Any, tmp_path: Path) -> None:
    rows = astra_rows()
    fill(astra_db, rows)
    lake = Lake.init(tmp_path / "lake")
    env = {**os.environ, "NUMBA_CACHE_DIR": os.environ.get("NUMBA_CACHE_DIR", str(tmp_path / "numba"))}
    proc = subprocess.run([sys.executable, "-c", KILLED_RUN, str(lake.path), astra_db.dsn], env=env, capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert lake.sql("SELECT count(*) FROM aspcap").column(0)[0].as_py() == 20
    assert "line_forest" not in lake.info()["tables"]
    seen: list[tuple[str, int]] = []
    summary = Lake(lake.path).import_postgres(astra_db.dsn, commit_rows=10, progress=lambda t, d, n: seen.append((t, d)))
    assert summary.resumed_after == {"aspcap": 520}  # the task_pk of the 20th aspcap row
    assert next(d for t, d in seen if t == "aspcap") == 20  # the first 20 rows were not read again
    assert [d for t, d in seen if t == "source"] == []  # finished tables are not read again
    assert summary.rows["aspcap"] == 60
    assert_lake_holds(lake, rows)
    assert not (lake.path / "_meta" / "imports" / "postgres.json").exists()


def test_cli_imports_with_a_progress_report(astra_db: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from astra_lake.cli import app

    fill(astra_db, astra_rows())
    path = tmp_path / "lake"
    res = CliRunner().invoke(app, ["import-postgres", astra_db.dsn, "-t", "source,apogee_star", "--lake", str(path)])
    assert res.exit_code == 0, res.output
    assert "source: 40 rows" in res.output and "apogee_star: 30 rows" in res.output
    monkeypatch.setenv("ASTRA_LAKE_CONFIG", str(tmp_path / "config.toml"))  # the DSN from the configuration
    assert CliRunner().invoke(app, ["config", "set", "postgres.dsn", astra_db.dsn]).exit_code == 0
    res = CliRunner().invoke(app, ["import-postgres", "-t", "aspcap", "--lake", str(path)])
    assert res.exit_code == 0 and "aspcap: 60 rows" in res.output, res.output
    res = CliRunner().invoke(app, ["import-postgres", astra_db.dsn, "-t", "nope", "--lake", str(path)])
    assert res.exit_code != 0
    message = str(res.exception) if isinstance(res.exception, DatabaseImportError) else res.output
    assert "unknown table 'nope'" in message
