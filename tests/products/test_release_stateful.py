"""Releases against a reference model: random sequences of corv results written and upserted, spectra whose
``max_mjd`` changes, tags, releases of a tag (Parquet, sometimes HATS, with or without a filter), the same
release made again elsewhere, tampered copies verified, and vacuum. After every step each release holds
exactly the model's rows of its tag after its filter, and remaking a release gives the same bytes: a tag
is immutable, whatever is written or vacuumed after it.

The model is plain Python: per tag, ``{spectrum index: max_mjd}`` and ``{spectrum index: teff}``.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from astropy.io import fits
from astropy.table import Table
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, multiple, precondition, rule

from astra_lake import Lake
from astra_lake.errors import ReleaseError, TagExistsError, ValidationError, VersionNotFoundError
from astra_lake.ingest import synthetic as S
from astra_lake.products.filters import ReleaseFilter
from astra_lake.products.release import MANIFEST, verify_release
from astra_lake.schema.flags import sdss5_target_bits
from astra_lake.schema.loader import load_schema
from astra_lake.schema.versions import version_to_int

N = 5  # sources, one APOGEE coadd each
LABELS = {b.bit: b.label for b in load_schema().targeting}  # an excluded carton, by its label
V_ASTRA = version_to_int("0.8.0")
OMITTABLE = ("corv.logg", "t_elapsed", "source.tic_v8_id", "corv.result_flags", "apogee_star.snr")
CORV_FLAGS = ("flag_fitting_failure", "flag_not_mwm_wd", "flag_no_snow_white_classification", "flag_not_da_type")


@dataclass(frozen=True)
class State:
    """What the model knows at one point: spectrum index -> max_mjd, spectrum index -> corv teff."""

    mjd: dict[int, int]
    teff: dict[int, float]


@dataclass(frozen=True)
class Made:
    """A release the machine made: of which tag, how, where, and its manifest's bytes."""

    tag: str
    formats: tuple[str, ...]
    filter: ReleaseFilter
    path: Path
    manifest: bytes


@functools.cache
def _template() -> tuple[Path, pa.Table]:
    """A lake with N sources and one apogee_star coadd each (built once), and the coadds as written."""
    root = Path(tempfile.mkdtemp(prefix="astra-lake-release-stateful-")) / "lake"
    atexit.register(shutil.rmtree, root.parent, ignore_errors=True)
    lake = Lake.init(root)
    lake.write("source", S.sources(N, seed=11))
    ids = lake.scan("source").select("sdss_id").collect().to_series().to_numpy()
    coadds = next(S.spectra("apogee_star", np.sort(ids), seed=12))
    coadds = coadds.set_column(coadds.column_names.index("max_mjd"), "max_mjd", pa.array([59000] * N, pa.int32()))
    lake.write("apogee_star", coadds)
    return root, coadds


class ReleaseVersusModel(RuleBasedStateMachine):
    made = Bundle("made")

    def __init__(self) -> None:
        super().__init__()
        template, self.coadds = _template()
        self.dir = Path(tempfile.mkdtemp(prefix="astra-lake-release-stateful-"))
        shutil.copytree(template, self.dir / "lake")
        self.lake = Lake(self.dir / "lake")
        rows = self.lake.sql("SELECT spectrum_pk, obj FROM apogee_star").to_pylist()
        by_obj = {r["obj"]: r["spectrum_pk"] for r in rows}
        self.pks = [by_obj[o] for o in self.coadds.column("obj").to_pylist()]  # spectrum index -> spectrum_pk
        flags = self.lake.sql("SELECT a.spectrum_pk, s.sdss5_target_flags FROM apogee_star a JOIN source s USING (source_pk)")
        bits = dict(zip(flags.column(0).to_pylist(), flags.column(1).to_pylist(), strict=True))
        self.bits = [set(sdss5_target_bits(bits[pk]) or []) for pk in self.pks]  # spectrum index -> its source's cartons
        self.state = State({i: 59000 for i in range(N)}, {})
        self.tags: dict[str, State] = {}
        self.releases: list[Made] = []
        self.pinned: dict[int, State] = {self.lake.version: self.state}  # lake version -> the model then
        self.maybe_gone: set[int] = set()  # pinned versions vacuum may have deleted files of

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def _corv(self, rows: list[tuple[int, float]]) -> pa.Table:
        return pa.table(
            {
                "spectrum_pk": pa.array([self.pks[i] for i, _ in rows], pa.int64()),
                "v_astra": pa.array([V_ASTRA] * len(rows), pa.int32()),
                "teff": pa.array([t for _, t in rows], pa.float32()),
            }
        )

    # -- writes -----------------------------------------------------------------------------------
    @rule(rows=st.lists(st.tuples(st.integers(0, N - 1), st.integers(4000, 90000).map(float)), min_size=1, max_size=3))
    def upsert_corv(self, rows: list[tuple[int, float]]) -> None:
        self.lake.upsert("corv", self._corv(rows))
        self._now(State(self.state.mjd, self.state.teff | dict(rows)))

    @rule(rows=st.lists(st.tuples(st.integers(0, N - 1), st.integers(4000, 90000).map(float)), min_size=1, max_size=3))
    def write_corv(self, rows: list[tuple[int, float]]) -> None:
        keys = [i for i, _ in rows]
        unique = len(set(keys)) == len(keys)
        if unique and all(self.state.teff.get(i) == t for i, t in rows):  # a retry of stored rows: accepted, no change
            self.lake.write("corv", self._corv(rows))
        elif unique and not set(keys) & set(self.state.teff):
            self.lake.write("corv", self._corv(rows))
            self._now(State(self.state.mjd, self.state.teff | dict(rows)))
        else:  # a key stored already (with another value) or given twice: refused
            with pytest.raises(ValidationError):
                self.lake.write("corv", self._corv(rows))

    @rule(index=st.integers(0, N - 1), mjd=st.integers(59000, 59010))
    def move_coadd(self, index: int, mjd: int) -> None:
        """The coadd of a source gets a later (or earlier) last visit: an upsert by its natural key."""
        row = self.coadds.slice(index, 1)
        row = row.set_column(row.column_names.index("max_mjd"), "max_mjd", pa.array([mjd], pa.int32()))
        self.lake.upsert("apogee_star", row)
        self._now(State(self.state.mjd | {index: mjd}, self.state.teff))

    def _now(self, state: State) -> None:
        self.state = state
        self.pinned[self.lake.version] = state

    @rule()
    def tag(self) -> None:
        name = f"t{len(self.tags)}"
        self.lake.tag(name)
        self.tags[name] = self.state

    @rule(data=st.data())
    def tag_earlier(self, data: st.DataObject) -> None:
        """Tag an earlier lake version: it reads as the model did then, or, when vacuum deleted files of it,
        the tag is refused (a tag that cannot be read would stay forever, since tags are immutable)."""
        version = data.draw(st.sampled_from(sorted(self.pinned)))
        name = f"t{len(self.tags)}"
        if version in self.maybe_gone:
            try:
                self.lake.tag(name, version)
            except VersionNotFoundError as err:
                assert "vacuum deleted" in str(err) and name not in self.lake.tags()
                return
        else:
            self.lake.tag(name, version)
        self.tags[name] = self.pinned[version]
        with pytest.raises(TagExistsError):
            self.lake.tag(name)  # tags are immutable

    @rule()
    def vacuum(self) -> None:
        self.lake.vacuum(retention_hours=0, dry_run=False)
        kept = {t["lake_version"] for t in self.lake.tags().values()} | {self.lake.version}
        self.maybe_gone |= set(self.pinned) - kept

    # -- releases ---------------------------------------------------------------------------------
    @precondition(lambda self: bool(self.tags))
    @rule(
        target=made,
        data=st.data(),
        also=st.sampled_from([(), ("hats",), ("fits",)]),
        max_mjd=st.none() | st.integers(58999, 59010),
        carton=st.none() | st.integers(1, 63),
        omit=st.lists(st.sampled_from(OMITTABLE), max_size=2, unique=True),
    )
    def release(
        self, data: st.DataObject, also: tuple[str, ...], max_mjd: int | None, omit: list[str], carton: int | None = None
    ) -> Made:
        tag = data.draw(st.sampled_from(sorted(self.tags)))
        formats = ("parquet", *also)
        cartons = () if carton is None else (LABELS[carton],)
        rf = ReleaseFilter(max_mjd=max_mjd, omit_columns=tuple(omit), exclude_cartons=cartons)
        out = self.dir / f"r{len(self.releases)}"
        if not self._expected(tag, rf)["source"]:  # every source filtered out: refused, nothing written
            with pytest.raises(ReleaseError, match="no table has rows after the release filter"):
                self.lake.release("dr", tag=tag, out=out, formats=formats, release_filter=rf)
            assert not out.exists() and not list(self.dir.glob(".*.partial"))
            return multiple()
        manifest = self.lake.release("dr", tag=tag, out=out, formats=formats, release_filter=rf)
        assert manifest.tag == tag and manifest.table_versions == self.lake.tags()[tag]["tables"]
        made = Made(tag, formats, rf, out, (out / MANIFEST).read_bytes())
        self._check_rows(made)
        self.releases.append(made)
        return made

    @rule(made=made)
    def remake(self, made: Made) -> None:
        """The same release of the same tag, elsewhere and later: the same bytes, file by file."""
        out = self.dir / f"again{len(self.releases)}"
        self.lake.release("dr", tag=made.tag, out=out, formats=made.formats, release_filter=made.filter)
        assert (out / MANIFEST).read_bytes() == made.manifest
        assert _files(out) == _files(made.path)
        shutil.rmtree(out)

    @rule(made=made, how=st.sampled_from(["change", "delete", "add"]), data=st.data())
    def tamper(self, made: Made, how: str, data: st.DataObject) -> None:
        """verify names exactly what changed in a copy of a release, and nothing else."""
        copy = self.dir / "tampered"
        shutil.copytree(made.path, copy)
        assert verify_release(copy).ok
        victim = data.draw(st.sampled_from(sorted(set(_files(copy)) - {MANIFEST})))
        if how == "change":
            raw = bytearray((copy / victim).read_bytes())
            raw[len(raw) // 2] ^= 0x01
            (copy / victim).write_bytes(bytes(raw))
            expected = [f"{victim}: sha256 differs from the manifest (file changed)"]
        elif how == "delete":
            (copy / victim).unlink()
            expected = [f"{victim}: missing"]
        else:
            victim = f"{victim}.extra"
            (copy / victim).write_bytes(b"not released")
            expected = [f"{victim}: not in the manifest (extra file)"]
        result = verify_release(copy)
        assert result.problems == expected and not result.ok
        shutil.rmtree(copy)

    @invariant()
    def releases_verify(self) -> None:
        for made in self.releases:
            assert verify_release(made.path).ok, made.path

    # -- the model's view of a release ------------------------------------------------------------
    def _expected(self, tag: str, rf: ReleaseFilter) -> dict[str, dict[int, Any]]:
        """Per released table, key -> value the release must hold for ``tag`` after the filter ``rf``."""
        state = self.tags[tag]
        excluded = {b.bit for b in load_schema().targeting if b.label in rf.exclude_cartons or b.name in rf.exclude_cartons}
        sources = {i for i in range(N) if not self.bits[i] & excluded}  # spectrum i is the only one of its source
        kept = {i for i, m in state.mjd.items() if (rf.max_mjd is None or m <= rf.max_mjd) and i in sources}
        return {
            "source": {self._source_pk(i): None for i in sources},
            "apogee_star": {self.pks[i]: state.mjd[i] for i in kept},
            "corv": {self.pks[i]: t for i, t in state.teff.items() if i in kept},
        }

    def _check_rows(self, made: Made) -> None:
        rf = made.filter
        expected = self._expected(made.tag, rf)
        value = {"source": None, "apogee_star": "max_mjd", "corv": "teff"}
        key = {"source": "source_pk", "apogee_star": "spectrum_pk", "corv": "spectrum_pk"}
        manifest = verify_release(made.path).manifest
        for table, rows in expected.items():
            path = made.path / "parquet" / f"{table}.parquet"
            if not rows:  # a table with no row in the release is not released
                assert not path.exists() and f"parquet/{table}.parquet" not in manifest.rows, table
                continue
            got = pq.read_table(path)
            assert _rows(got, key[table], value[table]) == rows, table
            assert manifest.rows[f"parquet/{table}.parquet"] == {"rows": len(rows)}
            omitted = rf.omitted(self.lake.catalog.schema, table)
            assert not omitted & set(got.column_names), table
            assert {"ra", "dec", "_healpix_29"} <= set(got.column_names)
            if table == "corv":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # astropy notes the string widths it infers
                    read = Table.read(path)  # astropy: the same values, with their unit
                assert dict(zip(read["spectrum_pk"].tolist(), read["teff"].tolist(), strict=True)) == rows
                assert read["teff"].unit == "K"
                flagged = "corv.result_flags" in rf.omit_columns
                assert all((c in got.column_names) != flagged for c in ("result_flags", *CORV_FLAGS))
            if "fits" in made.formats and table == "corv":  # astraAllStarCorv: the APOGEE HDU holds the same rows
                (path,) = made.path.glob("fits/*/summary/astraAllStarCorv-*.fits")
                with fits.open(path) as hdus:
                    star = hdus[2].data
                    assert dict(zip(star["spectrum_pk"].tolist(), star["teff"].tolist(), strict=True)) == rows
                    assert not {c.lower() for c in hdus[2].columns.names} & omitted
            if "hats" in made.formats:  # the HATS leaves hold the same rows as the flat file
                leaves = sorted((made.path / "hats" / table / "dataset").rglob("Npix=*.parquet"))
                assert _rows(pa.concat_tables(pq.read_table(p) for p in leaves), key[table], value[table]) == rows

    def _source_pk(self, index: int) -> int:
        return int(self.lake.sql(f"SELECT source_pk FROM apogee_star WHERE spectrum_pk = {self.pks[index]}").column(0)[0].as_py())


def _rows(table: pa.Table, key: str, value: str | None) -> dict[int, Any]:
    keys = table.column(key).to_pylist()
    assert len(set(keys)) == len(keys), f"{key} repeated"
    values = table.column(value).to_pylist() if value else [None] * len(keys)
    return dict(zip(keys, values, strict=True))


def _files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# Bounded: each release takes about a second on a loaded machine; no shrinking (a failure prints its steps).
TestReleaseVersusModel = ReleaseVersusModel.TestCase
TestReleaseVersusModel.settings = settings(
    max_examples=3,
    stateful_step_count=10,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_a_tag_released_before_and_after_later_writes_and_vacuum_is_the_same() -> None:
    """The sequence the brief names, spelled out: a release of a tag is unchanged by upserts after the tag,
    by a table first written after the tag, and by vacuum; a release of a later tag sees the new rows."""
    machine = ReleaseVersusModel()
    try:
        machine.tag()  # t0: no corv table yet
        first = machine.release(data=_Fixed("t0"), also=("hats",), max_mjd=None, omit=[])
        machine.upsert_corv(rows=[(0, 5000.0), (3, 6000.0)])
        machine.move_coadd(index=3, mjd=59005)
        machine.tag()  # t1
        second = machine.release(data=_Fixed("t1"), also=("fits",), max_mjd=59004, omit=["corv.result_flags", "corv.logg"])
        machine.upsert_corv(rows=[(0, 7000.0)])
        replaced = machine.lake.version  # its corv file is rewritten by the next upsert, then vacuumed
        machine.upsert_corv(rows=[(0, 7500.0)])
        machine.write_corv(rows=[(1, 8000.0)])
        readable = machine.lake.version  # the live corv files, and apogee_star as tagged in t1
        machine.move_coadd(index=0, mjd=59009)
        machine.vacuum()
        gone = f"cannot tag lake version {replaced}: vacuum deleted 1 of the 1 files of corv"
        with pytest.raises(VersionNotFoundError, match=gone):
            machine.lake.tag("late", replaced)
        assert "late" not in machine.lake.tags()
        machine.tag_earlier(data=_Fixed(readable))  # t2
        carton = min(machine.bits[1] - {0})  # a carton of the source of coadd 1: that source leaves the release
        machine.release(data=_Fixed("t2"), also=("hats",), max_mjd=None, omit=[], carton=carton)
        machine.remake(first)
        machine.remake(second)
        machine.tag()  # t3
        machine.release(data=_Fixed("t3"), also=(), max_mjd=59008, omit=[])
        machine.releases_verify()
    finally:
        machine.teardown()


class _Fixed:
    """A stand-in for hypothesis' data object that always draws the given value."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def draw(self, _strategy: Any) -> Any:
        return self.value


def test_a_release_without_rows_is_refused(tmp_path: Path) -> None:
    """A tag with no rows, or a filter that leaves none, is a one-line ReleaseError and writes nothing."""
    lake = Lake.init(tmp_path / "lake")
    lake.tag("empty")
    with pytest.raises(ReleaseError, match="tag 'empty': no table has rows at that tag"):
        lake.release("dr", tag="empty", out=tmp_path / "r0")
    lake.write("source", S.sources(1, seed=3))
    lake.tag("one")
    flags = lake.sql("SELECT sdss5_target_flags FROM source").column(0)[0].as_py()
    carton = LABELS[min(sdss5_target_bits(flags) or [])]  # a carton of the only source
    with pytest.raises(ReleaseError, match="tag 'one': no table has rows after the release filter"):
        lake.release("dr", tag="one", out=tmp_path / "r1", release_filter=ReleaseFilter(exclude_cartons=(carton,)))
    assert not (tmp_path / "r0").exists() and not (tmp_path / "r1").exists() and not list(tmp_path.glob(".*partial"))
    assert lake.release("dr", tag="one", out=tmp_path / "r2").rows["parquet/source.parquet"] == {"rows": 1}
