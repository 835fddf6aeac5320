"""Column roles (minted, managed, timestamps, kept on replace, identity) come from data_schema/common.yaml only."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from astra_lake import Lake
from astra_lake.errors import SchemaError
from astra_lake.ingest import synthetic as S
from astra_lake.lake import conform, writer
from astra_lake.lake.sequences import Sequences
from astra_lake.query import batches
from astra_lake.schema.loader import load_schema, schema_dir
from astra_lake.schema.views import summary_view_columns


@pytest.fixture()
def schema_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data_schema"
    shutil.copytree(schema_dir(), root, ignore=shutil.ignore_patterns("generated"))
    return root


def test_roles_as_declared() -> None:
    roles = load_schema().roles
    assert roles.minted == {"source": "source_pk", "spectrum": "spectrum_pk", "pipeline": "task_pk", "pixel": "task_pk"}
    assert roles.sequences == ("source_pk", "spectrum_pk", "task_pk")
    assert roles.timestamps == ("created", "modified") and roles.kept_on_replace == ("created",)
    assert roles.identity == ("spectrum_pk", "source_pk", "sdss_id", "_healpix_29")
    assert {"_healpix_29", "source_key", "v_astra_major_minor"} <= roles.managed
    # the modules' names are views of the declarations, not lists of their own
    assert roles.managed == conform.MANAGED
    assert roles.minted == writer.IDENTITY
    assert list(roles.identity) == batches.IDS
    with pytest.raises(AttributeError):
        _ = conform.NO_SUCH_NAME


def test_minted_columns_are_the_kinds_non_nullable_keys() -> None:
    schema = load_schema()
    for kind, column in schema.roles.minted.items():
        for table in schema.of_kind(kind):
            assert not table.column(column).nullable, (table.name, column)
            assert column in schema.roles.managed


def test_summary_views_show_the_identity_once() -> None:
    schema = load_schema()
    items = summary_view_columns(schema, schema.table("aspcap"))
    for column in schema.roles.identity:
        assert [(rel, c) for rel, c, _ in items if c == column] == [("pipeline", column)]


def test_a_role_naming_an_undeclared_column_is_an_error(schema_copy: Path) -> None:
    path = schema_copy / "common.yaml"
    path.write_text(path.read_text().replace("kept_on_replace: [created]", "kept_on_replace: [created, crated]", 1))
    with pytest.raises(SchemaError, match=r"roles.kept_on_replace names \['crated'\], not a declared column"):
        load_schema(schema_copy)


def test_a_misspelled_role_is_an_error(schema_copy: Path) -> None:
    path = schema_copy / "common.yaml"
    path.write_text(path.read_text().replace("  timestamps: [created, modified]", "  timestamp: [created, modified]", 1))
    with pytest.raises(SchemaError, match="timestamp"):
        load_schema(schema_copy)


def test_sequences_refuse_names_that_are_not_minted(tmp_path: Path) -> None:
    seq = Sequences(tmp_path)
    assert list(seq.reserve("task_pk", 3)) == [1, 2, 3]
    with pytest.raises(ValueError, match="unknown sequence 'sdss_id'"):
        seq.reserve("sdss_id", 1)


def test_writer_follows_the_roles(tmp_path: Path) -> None:
    """Minted identities, timestamps, and what an upsert keeps, on a real write."""
    lake = Lake.init(tmp_path / "lake")
    lake.write("source", S.sources(5, seed=1))
    ids = lake.sql("SELECT sdss_id FROM source ORDER BY sdss_id").column(0).to_numpy()[:2]
    for batch in S.spectra("apogee_star", ids, seed=2):
        lake.write("apogee_star", batch)
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk").column(0).to_numpy()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=3))
    before = lake.sql("SELECT spectrum_pk, task_pk, created, modified FROM aspcap ORDER BY spectrum_pk").to_pylist()
    lake.upsert("aspcap", S.results("aspcap", pks, seed=4))
    after = lake.sql("SELECT spectrum_pk, task_pk, created, modified FROM aspcap ORDER BY spectrum_pk").to_pylist()
    assert sorted(r["task_pk"] for r in before) == [1, 2]  # minted from the task_pk sequence
    for old, new in zip(before, after, strict=True):
        assert (new["task_pk"], new["created"]) == (old["task_pk"], old["created"])  # kept on replace
        assert new["modified"] > old["modified"]  # stamped again
