"""The write path against a reference model: random sequences of write, upsert (new, existing, mixed and
repeated keys, several v_astra major.minor versions, streamed in small batches), compact, tag, vacuum
and reads at pinned versions, for a result, a spectrum and a pixel table. After every step the lake
holds exactly the model's rows (count, unique keys, identities, created/modified, values) and every tag
still reads what it read when it was made.

The model is plain Python: a dict from natural key to the row's identity, timestamps and values.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from astra_lake import Lake
from astra_lake.errors import ValidationError
from astra_lake.ingest import synthetic as S
from astra_lake.schema.versions import version_to_int

VERSIONS = ("0.8.0", "0.8.3", "0.9.1")  # two major.minor versions; 0.8.3 replaces 0.8.0
METHODS = ("a", "b")
NPIX = 8575
# (key index, version index, value): 6 keys x 3 versions, so batches often repeat and overlap keys
ROW = st.tuples(st.integers(0, 5), st.integers(0, 2), st.integers(0, 40).map(lambda i: i / 4))


@dataclass(frozen=True)
class Row:
    """What the model knows of one stored row."""

    identity: int
    created: Any
    modified: Any
    value: float
    v_astra: int | None


Model = dict[tuple[Any, ...], Row]


@functools.cache
def _template(table: str) -> Path:
    """A lake with 8 sources (and, for result/pixel tables, 8 APOGEE spectra), built once per table;
    automatic compaction after 3 files per leaf so that it happens within a few steps."""
    root = Path(tempfile.mkdtemp(prefix="astra-lake-stateful-")) / "lake"
    atexit.register(shutil.rmtree, root.parent, ignore_errors=True)
    lake = Lake.init(root)
    marker = root / "lake.json"
    marker.write_text(json.dumps(json.loads(marker.read_text()) | {"auto_compact_min_files": 3}))
    src = S.sources(8, seed=7)
    lake.write("source", src)
    if table != "apogee_star":
        lake.write("apogee_star", next(S.spectra("apogee_star", src.column("sdss_id").to_numpy(), seed=8)))
    return root


class LakeVersusModel(RuleBasedStateMachine):
    """Drives one table of a fresh lake and the model side by side (subclasses pick the table)."""

    table: ClassVar[str]

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="astra-lake-stateful-"))
        shutil.copytree(_template(self.table), self.dir / "lake")
        self.lake = Lake(self.dir / "lake")
        self.model: Model = {}
        self.minted: set[int] = set()  # every identity this table ever handed out (never reused)
        self.tags: dict[str, Model] = {}
        self.pinned: dict[int, Model] = {self.lake.version: {}}
        self.setup()

    def setup(self) -> None:
        """Table-specific state (the spectra results hang off)."""

    def teardown(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- table-specific ---------------------------------------------------------------------------
    def batch(self, rows: list[tuple[int, int, float]]) -> pa.Table:
        """Arrow rows for (key index, version index, value) triples."""
        raise NotImplementedError

    def key(self, k: int, v: int) -> tuple[Any, ...]:
        raise NotImplementedError

    def v_astra(self, v: int) -> int | None:
        return version_to_int(VERSIONS[v])

    def read(self, version: int | str | None = None) -> Model:
        """The table as the model sees it, read through the public API (a Polars scan)."""
        raise NotImplementedError

    # -- rules ------------------------------------------------------------------------------------
    @rule(rows=st.lists(ROW, min_size=1, max_size=6), batch_rows=st.sampled_from([1, 2, 1000]))
    def upsert(self, rows: list[tuple[int, int, float]], batch_rows: int) -> None:
        """Insert or replace: the row given last for a key wins (also across streamed batches)."""
        before = self.model
        self.lake.upsert(self.table, self.batch(rows), batch_rows=batch_rows)
        expected = dict(before)
        for k, v, value in rows:
            expected[self.key(k, v)] = Row(-1, None, None, value, self.v_astra(v))
        given = {self.key(k, v) for k, v, _ in rows}
        self._check_write(before, expected, given)
        assert _rows_stored(self.lake, self.table) == len(given)  # each key once, however often given

    @rule(rows=st.lists(ROW, min_size=1, max_size=4))
    def write(self, rows: list[tuple[int, int, float]]) -> None:
        """Append: refused when a key exists (use upsert) or appears twice in the batch (named); a batch stored
        exactly as offered already is a retry: accepted, nothing written."""
        keys = [self.key(k, v) for k, v, _ in rows]
        store = self.lake.catalog.store(self.table)
        version = store.latest_version() if store.exists() else -1
        retry = len(set(keys)) == len(keys) and all(
            k in self.model and (self.model[k].value, self.model[k].v_astra) == (value, self.v_astra(v))
            for k, (_, v, value) in zip(keys, rows, strict=True)
        )
        if retry:  # every row already stored as offered: a retry of a committed write, accepted and not written again
            self.lake.write(self.table, self.batch(rows))
        elif any(k in self.model for k in keys):
            with pytest.raises(ValidationError, match="already exist"):
                self.lake.write(self.table, self.batch(rows))
        elif len(set(keys)) < len(keys):
            twice = next(k for k in keys if keys.count(k) > 1)
            with pytest.raises(ValidationError, match="appears more than once") as err:
                self.lake.write(self.table, self.batch(rows))
            assert all(repr(part) in str(err.value) for part in twice)  # the message names the key
        else:
            self.lake.write(self.table, self.batch(rows))
            expected = self.model | {self.key(k, v): Row(-1, None, None, value, self.v_astra(v)) for k, v, value in rows}
            self._check_write(self.model, expected, given=set(keys))
            return
        assert (store.latest_version() if store.exists() else -1) == version  # nothing of a refused write committed

    @rule()
    def compact(self) -> None:
        self.lake.compact(self.table if self.model else None)
        self._pin()

    @rule()
    def tag(self) -> None:
        name = f"t{len(self.tags)}"
        self.lake.tag(name)
        self.tags[name] = dict(self.model)

    @rule()
    def vacuum(self) -> None:
        self.lake.vacuum(retention_hours=0, dry_run=False)
        tagged = {t["lake_version"] for t in self.lake.tags().values()}
        self.pinned = {v: m for v, m in self.pinned.items() if v in tagged or v == self.lake.version}

    @precondition(lambda self: len(self.pinned) > 0)
    @rule(data=st.data())
    def read_pinned(self, data: st.DataObject) -> None:
        version = data.draw(st.sampled_from(sorted(self.pinned)))
        assert self.read(version) == self.pinned[version]

    @invariant()
    def lake_equals_model(self) -> None:
        assert self.read() == self.model
        for name, model in self.tags.items():
            assert self.read(name) == model, name

    # -- helpers ----------------------------------------------------------------------------------
    def _check_write(self, before: Model, expected: Model, given: set[tuple[Any, ...]]) -> None:
        """Compare the lake after a write with the model: values from ``expected``; identity and
        created carried over for replaced keys, fresh for new ones; modified set on every given row."""
        got = self.read()
        assert set(got) == set(expected)
        for key, row in got.items():
            assert (row.value, row.v_astra) == (expected[key].value, expected[key].v_astra), key
            if key in before:
                old = before[key]
                assert (row.identity, row.created) == (old.identity, old.created), key
                assert (row.modified > old.modified) if key in given else (row.modified == old.modified), key
            else:
                assert row.identity not in self.minted and row.identity > max(self.minted, default=0), key
                assert row.created == row.modified, key
        self.minted |= {r.identity for r in got.values()}
        self.model = got
        self._pin()

    def _pin(self) -> None:
        self.pinned[self.lake.version] = dict(self.model)


def _rows_stored(lake: Lake, table: str) -> int:
    """Rows the table's last write stored, as the lake log records it."""
    return [c for c in lake.versions() if c.table == table and c.operation in ("upsert", "append")][-1].rows


class ResultTable(LakeVersusModel):
    """corv: results keyed by (spectrum_pk, v_astra major.minor)."""

    table = "corv"

    def setup(self) -> None:
        self.pks = sorted(self.lake.scan("apogee_star").select("spectrum_pk").collect().to_series().to_list())

    def key(self, k: int, v: int) -> tuple[Any, ...]:
        return (self.pks[k], version_to_int(VERSIONS[v]) // 1000)

    def batch(self, rows: list[tuple[int, int, float]]) -> pa.Table:
        return pa.table(
            {
                "spectrum_pk": pa.array([self.pks[k] for k, _, _ in rows], pa.int64()),
                "v_astra": pa.array([version_to_int(VERSIONS[v]) for _, v, _ in rows], pa.int32()),
                "teff": pa.array([x for _, _, x in rows], pa.float32()),
            }
        )

    def read(self, version: int | str | None = None) -> Model:
        cols = ("spectrum_pk", "v_astra", "task_pk", "created", "modified", "teff")
        df = self.lake.scan(self.table, version).select(*cols).collect()
        out = {}
        for r in df.iter_rows(named=True):
            key = (r["spectrum_pk"], r["v_astra"] // 1000)
            out[key] = Row(r["task_pk"], r["created"], r["modified"], r["teff"], r["v_astra"])
        assert len(out) == df.height, "a key is stored twice"
        return out


class PixelTable(ResultTable):
    """normalized_apogee: pixel rows keyed by (spectrum_pk, v_astra major.minor, method)."""

    table = "normalized_apogee"

    def key(self, k: int, v: int) -> tuple[Any, ...]:
        return (self.pks[k % 3], version_to_int(VERSIONS[v]) // 1000, METHODS[k // 3])

    def batch(self, rows: list[tuple[int, int, float]]) -> pa.Table:
        n = len(rows)
        flux = np.repeat(np.array([x for _, _, x in rows], np.float32), NPIX)
        return pa.table(
            {
                "spectrum_pk": pa.array([self.pks[k % 3] for k, _, _ in rows], pa.int64()),
                "v_astra": pa.array([version_to_int(VERSIONS[v]) for _, v, _ in rows], pa.int32()),
                "method": [METHODS[k // 3] for k, _, _ in rows],
                "flux": pa.FixedSizeListArray.from_arrays(pa.array(flux), NPIX),
                "ivar": pa.FixedSizeListArray.from_arrays(pa.array(np.ones(n * NPIX, np.float32)), NPIX),
            }
        )

    def read(self, version: int | str | None = None) -> Model:
        cols = ("spectrum_pk", "v_astra", "method", "task_pk", "created", "modified", "flux")
        df = self.lake.scan(self.table, version).select(*cols).collect()
        out = {}
        for r in df.iter_rows(named=True):
            flux = np.asarray(r["flux"], np.float32)
            assert np.all(flux == flux[0])  # the whole array moved with its row
            key = (r["spectrum_pk"], r["v_astra"] // 1000, r["method"])
            out[key] = Row(r["task_pk"], r["created"], r["modified"], float(flux[0]), r["v_astra"])
        assert len(out) == df.height, "a key is stored twice"
        return out


class SpectrumTable(LakeVersusModel):
    """apogee_star: spectra keyed by their natural key (release, apred, apstar, telescope, obj)."""

    table = "apogee_star"

    def setup(self) -> None:
        self.sdss_ids = sorted(self.lake.scan("source").select("sdss_id").collect().to_series().to_list())

    def key(self, k: int, v: int) -> tuple[Any, ...]:
        return (f"o{k}", ("apo25m", "lco25m", "apo25m")[v])

    def v_astra(self, v: int) -> int | None:
        return None

    def batch(self, rows: list[tuple[int, int, float]]) -> pa.Table:
        n = len(rows)
        flux = np.repeat(np.array([x for _, _, x in rows], np.float32), NPIX)
        return pa.table(
            {
                "release": ["dr19"] * n,
                "apred": ["1.3"] * n,
                "apstar": ["stars"] * n,
                "telescope": [self.key(k, v)[1] for k, v, _ in rows],
                "obj": [f"o{k}" for k, _, _ in rows],
                "sdss_id": pa.array([self.sdss_ids[k] for k, _, _ in rows], pa.int64()),
                "snr": pa.array([x for _, _, x in rows], pa.float32()),
                "flux": pa.FixedSizeListArray.from_arrays(pa.array(flux), NPIX),
            }
        )

    def read(self, version: int | str | None = None) -> Model:
        cols = ("obj", "telescope", "spectrum_pk", "created", "modified", "snr", "flux", "sdss_id")
        df = self.lake.scan(self.table, version).select(*cols).collect()
        out = {}
        for r in df.iter_rows(named=True):
            flux = np.asarray(r["flux"], np.float32)
            assert np.all(flux == r["snr"]) and r["sdss_id"] == self.sdss_ids[int(r["obj"][1:])]
            out[(r["obj"], r["telescope"])] = Row(r["spectrum_pk"], r["created"], r["modified"], r["snr"], None)
        assert len(out) == df.height, "a key is stored twice"
        return out


# Bounded for CI; no shrinking (a failure prints its steps at once instead of minutes of shrinking).
STEPS = settings(
    max_examples=5,
    stateful_step_count=15,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.reuse, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

TestResultTable = ResultTable.TestCase
TestResultTable.settings = STEPS
TestPixelTable = PixelTable.TestCase
TestPixelTable.settings = STEPS
TestSpectrumTable = SpectrumTable.TestCase
TestSpectrumTable.settings = STEPS


def test_rewrite_of_stored_rows_is_an_accepted_retry() -> None:
    """The sequence hypothesis found once: rows upserted, the table compacted, then the same rows written
    again. The write is a retry of a committed write (issue 11): accepted, nothing committed; changing a
    value makes it a clash again."""
    machine = SpectrumTable()
    try:
        machine.upsert(batch_rows=1, rows=[(4, 0, 4.25), (1, 2, 4.25)])
        machine.vacuum()
        machine.tag()
        machine.compact()
        machine.write(rows=[(1, 2, 4.25)])  # the model expects: accepted, no commit
        machine.write(rows=[(1, 2, 5.0)])  # the model expects: refused, names "already exist"
        machine.lake_equals_model()
    finally:
        machine.teardown()
