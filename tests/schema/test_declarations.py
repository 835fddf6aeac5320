"""data_schema/ is read through typed declarations: a typo is an error naming the file and the key,
and the validated schema is cached on disk by content."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from astra_lake.errors import SchemaError
from astra_lake.schema.declarations import TableDecl
from astra_lake.schema.loader import _validated, load_schema, parse_schema, schema_dir


@pytest.fixture()
def schema_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of data_schema/ (no generated files) and a private cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = tmp_path / "data_schema"
    shutil.copytree(schema_dir(), root, ignore=shutil.ignore_patterns("generated"))
    return root


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def test_a_misspelled_bad_marker_is_an_error(schema_copy: Path) -> None:
    path = schema_copy / "tables" / "apogeenet.yaml"
    edit(path, "      bad: true\n", "      bda: true\n")
    with pytest.raises(SchemaError) as err:
        load_schema(schema_copy)
    message = str(err.value)
    assert message.startswith(f"{path}: flag_columns[result_flags].editions[0].flags[")
    assert ".bda: unknown key (a typo?); allowed here: aliases, bad, bit, description" in message
    assert "\n" not in message


def test_a_misspelled_unit_is_an_error(schema_copy: Path) -> None:
    path = schema_copy / "tables" / "aspcap.yaml"
    edit(path, "- name: teff\n  type: float32\n  unit: K\n", "- name: teff\n  type: float32\n  unti: K\n")
    with pytest.raises(SchemaError, match=r"aspcap\.yaml: columns\[teff\]\.unti: unknown key \(a typo\?\); allowed here: .*un"):
        load_schema(schema_copy)


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("common.yaml", "row_group_rows: 16,", "row_group_row: 16,", r"common\.yaml: storage\.spectrum\.row_group_row: unknown"),
        ("flag_sets.yaml", "  parameters:\n", "  parameter:\n", r"flag_sets\.yaml: aspcap_abundance\.parameter: unknown key"),
        ("tables/clam.yaml", "  type: float32\n", "  type: flot32\n", r"clam\.yaml: columns\[\w+\]\.type: .*type 'flot32'"),
        ("tables/astronn.yaml", "      all_of:\n", "      al_of:\n", r"astronn\.yaml: .*flag_bad: .*expected marked, any_bit"),
        ("tables/clam.yaml", "kind: pipeline", "kind: pipe", r"clam\.yaml: kind: Input should be 'source', 'spectrum'"),
        ("tables/clam.yaml", "- bit: 1\n", "- bit: 64\n", r"clam\.yaml: flag_columns\[result_flags\]\.flags\[\w+\]\.bit: .*63"),
    ],
)
def test_other_mistakes_name_file_and_key(schema_copy: Path, file: str, old: str, new: str, expected: str) -> None:
    edit(schema_copy / file, old, new)
    with pytest.raises(SchemaError, match=expected):
        load_schema(schema_copy)


def _mappings(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, dict):
        return [node, *(m for v in node.values() for m in _mappings(v))]
    if isinstance(node, list):
        return [m for v in node for m in _mappings(v)]
    return []


TABLES = sorted((schema_dir() / "tables").glob("*.yaml"))


@settings(max_examples=12, deadline=None)
@given(table=st.sampled_from(TABLES), pick=st.integers(min_value=0), key=st.from_regex(r"[a-z]{2,8}_x", fullmatch=True))
def test_any_unknown_key_anywhere_in_a_table_is_refused(
    tmp_path_factory: pytest.TempPathFactory, table: Path, pick: int, key: str
) -> None:
    """Property: adding a key the declarations do not know, in any mapping of any table file, fails."""
    raw = yaml.safe_load(table.read_text())
    target = _mappings(raw)
    target[pick % len(target)][key] = True
    path = tmp_path_factory.mktemp("typo") / table.name
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SchemaError) as err:
        _validated(TableDecl, path)
    assert f"{key}: unknown key" in str(err.value) or f"{key}: " in str(err.value)


def test_value_ranges_are_accepted_and_the_products_folder_is_left_to_its_loader(schema_copy: Path) -> None:
    teff = "- name: teff\n  type: float32\n"
    edit(schema_copy / "tables" / "aspcap.yaml", teff, teff + "  minimum: 2000\n  maximum: 60000.5\n")
    (schema_copy / "products" / "anything.yaml").write_text("anything: [the releases loader reads products/]\n")
    teff = load_schema(schema_copy).table("aspcap").column("teff")
    assert (teff.minimum, teff.maximum, teff.unit) == (2000.0, 60000.5, "K")
    assert load_schema().table("aspcap").column("teff").minimum != 2000


CHILD = """
import sys
from pathlib import Path
from astra_lake.schema.loader import load_schema
s = load_schema(Path(sys.argv[1]))
print(len(s.tables), s.table("aspcap").column("teff").unit, "yaml" in sys.modules, "pydantic" in sys.modules)
"""


def _child(root: Path, cache: Path) -> str:
    env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
    done = subprocess.run([sys.executable, "-c", CHILD, str(root)], env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_a_second_process_reads_the_cache_without_yaml_or_pydantic(schema_copy: Path, tmp_path: Path) -> None:
    cache = tmp_path / "c1"
    n = str(len(list((schema_copy / "tables").glob("*.yaml"))))
    assert _child(schema_copy, cache) == [n, "K", "True", "True"]  # parsed and validated, then cached
    assert _child(schema_copy, cache) == [n, "K", "False", "False"]  # from the cache
    (pickle,) = (cache / "astra-lake" / "schema").glob("*.pickle")
    teff = "- name: teff\n  type: float32\n  unit: K\n"
    edit(schema_copy / "tables" / "aspcap.yaml", teff, teff.replace("unit: K", "unit: kelvin"))
    assert _child(schema_copy, cache) == [n, "kelvin", "True", "True"]  # an edit is a new key: never stale
    pickle.write_bytes(b"not a pickle")
    edit(schema_copy / "tables" / "aspcap.yaml", "unit: kelvin\n", "unit: K\n")
    assert _child(schema_copy, cache) == [n, "K", "True", "True"]  # a damaged entry is rebuilt


def test_an_unwritable_cache_folder_is_not_an_error(schema_copy: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    assert _child(schema_copy, blocker)[0] == str(len(parse_schema(schema_copy).tables))
