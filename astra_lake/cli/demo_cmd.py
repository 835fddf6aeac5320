"""``astra-lake demo``: build a lake from the bundled real fixtures plus a synthetic survey, query it,
run a kernel over it and release a tag of it (the README's main job)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pyarrow as pa
import typer
from rich.table import Table as RichTable

from astra_lake.api import Lake
from astra_lake.cli._common import console, fail
from astra_lake.ingest import synthetic as S
from astra_lake.ingest.runner import Ingestor, find_files
from astra_lake.kernels.tasks import ChebyshevNormalize
from astra_lake.products.release import verify_release

FIXTURES = Path(__file__).resolve().parents[2] / "tests" / "data" / "fixtures"


def _show(title: str, tbl: object) -> None:
    import pyarrow as pa

    assert isinstance(tbl, pa.Table)
    out = RichTable(*tbl.column_names, title=title)
    for row in tbl.to_pylist():
        out.add_row(*[f"{v:.4g}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(out)


def demo(
    path: Annotated[Path, typer.Option("--path", help="Where to build the demo lake (replaced if it is one)")] = Path(
        "demo-lake"
    ),
    sources: Annotated[int, typer.Option(help="Synthetic sources")] = 2000,
    fixtures: Annotated[Path, typer.Option(help="Folder of real FITS files to ingest")] = FIXTURES,
) -> None:
    """Build a demo lake from real fixtures + a synthetic survey, query it, run a kernel, release a tag."""
    t0 = time.perf_counter()
    if path.exists():
        if not (path / "lake.json").exists():
            fail(f"{path} exists and is not an astra-lake; choose another --path")
        shutil.rmtree(path)
    lake = Lake.init(path)
    console.rule("1. Ingest the bundled real SDSS files")
    if fixtures.exists():
        summary = Ingestor(lake.catalog, workers=2).run(find_files([fixtures]))
        console.print(f"read {summary.read} files, failed {summary.failed}: {summary.rows}")
    else:
        console.print(f"(no fixtures at {fixtures}; skipping)")

    console.rule(f"2. A synthetic survey of {sources} sources through the same writer")
    src = S.sources(sources, seed=1, first_sdss_id=10_000_000)
    lake.upsert("source", src)
    ids = src.column("sdss_id").to_numpy()
    rng = np.random.default_rng(2)
    apogee_ids = ids[rng.random(ids.size) < 0.6]
    boss_ids = ids[rng.random(ids.size) < 0.5]
    for batch in S.spectra("apogee_star", apogee_ids, seed=3):
        lake.upsert("apogee_star", batch)
    for batch in S.spectra("boss_combined", boss_ids, seed=4):
        lake.upsert("boss_combined", batch)
    apogee_pks = lake.sql("SELECT spectrum_pk FROM apogee_star WHERE release = 'synthetic'").column(0).to_numpy()
    boss_pks = lake.sql("SELECT spectrum_pk FROM boss_combined").column(0).to_numpy()
    for pipeline, pks in (
        ("aspcap", apogee_pks),
        ("astronn", apogee_pks),
        ("apogeenet", apogee_pks),
        ("bossnet", boss_pks),
        ("snow_white", boss_pks),
    ):
        lake.upsert(pipeline, S.results(pipeline, pks, v_astra="0.8.0", seed=len(pipeline)))
    lake.upsert("astronn", S.results("astronn", apogee_pks[:200], v_astra="0.6.0", seed=99))
    console.print(
        f"{len(apogee_pks)} APOGEE + {len(boss_pks)} BOSS spectra, results for 5 pipelines; lake version {lake.version}"
    )

    console.rule("3. Queries (DuckDB over a pinned snapshot, macros from sql/)")
    con = lake.connect()
    _show(
        "ASPCAP results that are not flag_bad with 4000 <= teff <= 6000",
        con.sql(
            "SELECT count(*) AS n, round(avg(teff), 1) AS mean_teff FROM aspcap WHERE NOT flag_bad AND teff BETWEEN 4000 AND 6000"
        ).to_arrow_table(),
    )
    _show(
        "Most common ASPCAP flags",
        con.sql(
            "SELECT name, count(*) AS n FROM aspcap, flag_definitions d WHERE d.table_name = 'aspcap' "
            "AND d.column_name = 'result_flags' AND has_flag(result_flags, d.bit) GROUP BY name ORDER BY n DESC LIMIT 5"
        ).to_arrow_table(),
    )
    _show(
        "AstroNN flag_bad by Astra version (0.6 and 0.8 rules differ)",
        con.sql(
            "SELECT v_astra_to_str(v_astra) AS v_astra, count(*) AS n, sum(flag_bad::INT) AS bad "
            "FROM astronn GROUP BY 1 ORDER BY 1"
        ).to_arrow_table(),
    )
    _show(
        "The real apStar, as ingested",
        con.sql(
            "SELECT obj, telescope, n_visits, round(snr, 1) AS snr, round(v_rad, 2) AS v_rad "
            "FROM apogee_star WHERE release = 'dr17'"
        ).to_arrow_table(),
    )
    sdss_id = int(apogee_ids[0])
    spec = lake.spectra(sdss_id, "apogee_star")
    console.print(
        f"spectra(sdss_id={sdss_id}, 'apogee_star'): {len(spec)} spectrum, flux {spec.flux.shape}, "
        f"median S/N {np.median(spec.flux * np.sqrt(spec.ivar)):.1f}"
    )
    ra, dec = float(src.column("ra")[0].as_py()), float(src.column("dec")[0].as_py())
    near = lake.cone(ra, dec, 2.0, columns=["sdss_id"])
    console.print(f"cone(ra={ra:.3f}, dec={dec:.3f}, 2 deg): {near.num_rows} sources")
    n_spectra, good = 0, 0
    for block in lake.spectra_batches("apogee_star"):  # the full-scan path: numpy blocks, decoded ahead
        n_spectra += len(block)
        good += int((block.ivar > 0).sum())
    console.print(f"spectra_batches('apogee_star'): {n_spectra} spectra, {good / max(n_spectra, 1):.0f} usable pixels each")

    console.rule("4. A kernel over the lake: Chebyshev continuum of every APOGEE spectrum with S/N > 100")
    lake.apply(ChebyshevNormalize(), table="apogee_star", output="normalized_apogee", where="snr > 100")
    console.print(f"normalized_apogee rows: {lake.sql('SELECT count(*) FROM normalized_apogee').column(0)[0].as_py()}")

    console.rule("4b. Science in the lake: The Payne and The Cannon (lake.run / astra-lake run)")
    _science(lake, path)

    console.rule("4c. A neural network, a template fit and best (astra-lake run apogeenet / mdwarftype / best)")
    _more_science(lake, path)

    console.rule("5. Tag it and release the tag: FITS (SDSS datamodel), Parquet, HATS, checksummed manifest")
    lake.tag("demo-v1")
    out = path / "release" / "demo-v1"
    manifest = lake.release("demo", tag="demo-v1", out=out, progress=True)
    check = verify_release(out)
    if not check.ok:
        fail(f"release {out} does not verify: {check.problems[0]}", code=1)
    size_mb = sum(f["size"] for f in manifest.files) / 1e6
    console.print(f"released tag demo-v1 to {out}: {len(manifest.files)} files, {size_mb:.1f} MB; verified against its manifest")
    console.print(f"done in {time.perf_counter() - t0:.1f} s; explore with: astra-lake info --lake {path}")


PAYNE_FILES = Path(__file__).resolve().parents[2] / "tests" / "data" / "payne"


def _science(lake: Lake, path: Path, n: int = 240) -> None:
    """Emulated apStar spectra with known labels; The Payne fits them; a Cannon trained from a SQL query
    over the Payne's results runs on them; both queried with their flags and model spectra."""
    from astra_lake.pipelines.emulated import apogee_star_rows
    from astra_lake.pipelines.the_cannon import TheCannon
    from astra_lake.pipelines.the_payne import ThePayne

    files: dict[str, Any] = {"model": str(PAYNE_FILES / "NN_normalized_spectra.npz")}
    files |= {
        "mask": str(PAYNE_FILES / "apogee_mask.npz"),
        "continuum_pixels": str(PAYNE_FILES / "cannon_cont_pixels_apogee.npz"),
    }
    payne = ThePayne.load(files["model"])
    rng = np.random.default_rng(7)
    src = S.sources(n, seed=8, first_sdss_id=20_000_000)
    lake.upsert("source", src)
    labels = payne.emulator.unscale(rng.uniform(-0.35, 0.35, (n, payne.emulator.n_labels)))
    ids = src.column("sdss_id").to_numpy()
    lake.write("apogee_star", apogee_star_rows(payne, ids, labels, snr=rng.uniform(40, 300, n), dv=rng.uniform(-3, 3, n)))
    where = "release = 'emulated'"
    console.print(lake.run("the_payne", table="apogee_star", where=where, progress=True, **files).message)
    console.print(lake.run("the_payne", table="apogee_star", where=where, **files).message)
    con = lake.connect()
    _show(
        "the_payne: results by flag (flag_warn: any flag, e.g. flag_low_snr; flag_bad: fitting failure)",
        con.sql(
            "SELECT flag_warn, flag_bad, flag_low_snr, count(*) AS n, round(avg(teff), 1) AS mean_teff, "
            "round(median(e_teff), 1) AS median_e_teff FROM the_payne GROUP BY ALL ORDER BY ALL"
        ).to_arrow_table(),
    )
    truth = pa.table({"sdss_id": ids, "true_teff": labels[:, 0], "true_logg": labels[:, 1]})
    con.register("truth", truth)
    _show(
        "the_payne against the emulated truth, with its model spectra (JOIN model_apogee USING (task_pk))",
        con.sql(
            "SELECT count(*) AS n, round(stddev(p.teff - t.true_teff), 1) AS sd_teff, round(stddev(p.logg - t.true_logg), 3) "
            "AS sd_logg, round(avg(p.reduced_chi2), 3) AS mean_rchi2, min(len(m.model_flux)) AS model_pixels "
            "FROM the_payne p JOIN apogee_star s USING (spectrum_pk) JOIN truth t ON t.sdss_id = s.sdss_id "
            "JOIN model_apogee m ON m.task_pk = p.task_pk AND m.pipeline = 'the_payne' WHERE NOT p.flag_bad"
        ).to_arrow_table(),
    )
    query = "SELECT spectrum_pk, teff, logg, fe_h, mg_fe, v_macro FROM the_payne WHERE NOT flag_bad AND NOT flag_low_snr"
    cannon = TheCannon.train_from_lake(lake.snapshot(), query, table="apogee_star", order=2)
    model = cannon.save(path / "the_cannon_demo.npz")
    console.print(f"trained a Cannon on {cannon.meta['n_training']} spectra from: {query}")
    console.print(lake.run("the_cannon", table="apogee_star", where=where, model=str(model), progress=True).message)
    _show(
        "the_cannon against the_payne (The Cannon defines no flag_warn/flag_bad: test flag_fitting_failure)",
        lake.connect()
        .sql(
            "SELECT count(*) AS n, round(avg(c.teff - p.teff), 1) AS mean_dteff, round(stddev(c.teff - p.teff), 1) AS sd_dteff, "
            "round(stddev(c.fe_h - p.fe_h), 3) AS sd_dfe_h FROM the_cannon c JOIN the_payne p USING (spectrum_pk) "
            "WHERE NOT c.flag_fitting_failure AND NOT p.flag_low_snr"
        )
        .to_arrow_table(),
    )


MODELS = Path(__file__).resolve().parents[2] / "tests" / "data" / "models"


def _more_science(lake: Lake, path: Path) -> None:
    """APOGEENet's whole path (preprocessing, 20 noise draws, noise model, v3 flags) with a stand-in ONNX
    network of its contract (the trained weights are not public); MDwarfType with the public templates
    on the real BOSS spectrum; best over the survey's 0.8 results."""
    from astra_lake.pipelines.onnx import small_spectrum_net

    net = path / "apogeenet_standin.onnx"
    net.write_bytes(small_spectrum_net(npix=8575, n_out=3, seed=3).SerializeToString())
    where = "release = 'emulated'"
    console.print(lake.run("apogeenet", model=str(net), table="apogee_star", where=where, progress=True).message)
    _show(
        "apogeenet (stand-in weights: the numbers show the path, not stars) at v_astra 0.7.0, the v3 flag edition",
        lake.sql(
            "SELECT v_astra_to_str(v_astra) AS v_astra, count(*) AS n, round(median(teff)) AS median_teff, "
            "round(median(e_teff), 1) AS median_e_teff, sum(flag_unreliable_fe_h::INT) AS unreliable_fe_h "
            f"FROM apogeenet WHERE spectrum_pk IN (SELECT spectrum_pk FROM apogee_star WHERE {where}) GROUP BY 1"
        ),
    )
    templates: dict[str, Any] = {"model": str(MODELS / "spEigenStar-55734-KM.fits")}
    templates["response"] = str(MODELS / "resp_PCA_results.npz")
    if (MODELS / "spEigenStar-55734-KM.fits").exists():
        console.print(lake.run("mdwarftype", table="boss_visit", progress=True, **templates).message)
        _show(
            "mdwarftype on the real BOSS spectrum (a G1V star: the earliest template, flagged)",
            lake.sql(
                "SELECT s.plateid, s.mjd, s.fiberid, m.spectral_type, round(m.rchi2, 2) AS rchi2, "
                "m.flag_suspicious_k5_type, m.flag_bad FROM mdwarftype m JOIN boss_visit s USING (spectrum_pk)"
            ),
        )
    console.print(lake.run("best", v_astra="0.8.0", v_astra_major_minor=8).message)
    _show(
        "best of the Astra 0.8 results: one row per source, by the documented order of pipelines",
        lake.sql("SELECT pipeline, count(*) AS n, count(DISTINCT source_pk) AS sources FROM best GROUP BY 1 ORDER BY n DESC"),
    )
