"""Rows that arrive with their own identities push the lake's sequences past them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake import Lake
from astra_lake.lake.sequences import Sequences


def _source(sdss_id: int, source_pk: int | None = None) -> pa.Table:
    return pa.table(
        {
            "sdss_id": pa.array([sdss_id], pa.int64()),
            "source_pk": pa.array([source_pk], pa.int64()),
            "ra": [10.0 + sdss_id % 7],
            "dec": [-5.0],
        }
    )


def test_minted_identities_start_above_imported_ones(tmp_path: Path) -> None:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", _source(1, source_pk=5_000_000))  # as imported from Astra, pk kept
    lake.write("source", _source(2))  # minted by the lake
    rows = lake.sql("SELECT sdss_id, source_pk FROM source ORDER BY sdss_id").to_pylist()
    assert rows == [{"sdss_id": 1, "source_pk": 5_000_000}, {"sdss_id": 2, "source_pk": 5_000_001}]


def test_results_with_task_pk_advance_the_task_sequence(tmp_path: Path) -> None:
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", _source(1))
    spec = {"sdss_id": [1], "release": ["dr19"], "apred": ["1.4"], "apstar": ["stars"], "telescope": ["apo25m"], "obj": ["2M0"]}
    lake.write("apogee_star", spec)
    spk = lake.sql("SELECT spectrum_pk FROM apogee_star").column(0)[0].as_py()
    imported = {"task_pk": pa.array([777], pa.int64()), "spectrum_pk": [spk], "v_astra": pa.array([6000], pa.int32())}
    lake.upsert("aspcap", imported)
    lake.upsert("aspcap", {"spectrum_pk": [spk], "v_astra": pa.array([8000], pa.int32())})
    pks = sorted(lake.sql("SELECT task_pk FROM aspcap").column(0).to_pylist())
    assert pks == [777, 778]


@settings(max_examples=25, deadline=None)
@given(reserved=st.integers(0, 50), given_max=st.integers(1, 2**62))
def test_advance_to_never_lowers_and_next_value_exceeds(tmp_path_factory, reserved: int, given_max: int) -> None:  # type: ignore[no-untyped-def]
    seq = Sequences(tmp_path_factory.mktemp("meta"))
    first = seq.reserve("task_pk", reserved)
    seq.advance_to("task_pk", given_max)
    nxt = int(seq.reserve("task_pk", 1)[0])
    assert nxt == max(given_max, len(first)) + 1
    assert np.all(first < nxt)
