"""The documentation runs as written: the README's "Using it" block and notebooks/*.ipynb, on the demo lake."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def readme_block(heading: str) -> str:
    """The first fenced python block after a README heading."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, f"no python block under '## {heading}'"
    return match.group(1)


def test_the_using_it_block_runs_on_the_demo_lake(demo_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copytree(demo_lake, tmp_path / "demo-lake")  # the block tags and writes: work on a copy
    (tmp_path / "tests").symlink_to(ROOT / "tests")  # the block runs from a checkout: it names a bundled model
    monkeypatch.chdir(tmp_path)
    code = readme_block("Using it")
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md (Using it)", "exec"), namespace)

    from astra_lake import Lake

    lake = Lake(tmp_path / "demo-lake")
    assert "dr20" in lake.tags()
    n_bright = lake.sql("SELECT count(*) FROM apogee_star WHERE snr > 50").column(0)[0].as_py()
    assert lake.sql("SELECT count(*) FROM normalized_apogee").column(0)[0].as_py() == n_bright > 0  # replaced the demo's
    pk = namespace["spectrum_pk"]
    row = lake.sql(f"SELECT teff, logg FROM aspcap WHERE spectrum_pk = {pk} AND v_astra = 8000").to_pylist()
    assert row == [{"teff": 4810.0, "logg": 2.5}]  # the upsert in the block replaced the demo's result


NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebooks_run_from_a_temporary_folder(
    path: Path, demo_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Executed (nbclient, a fresh kernel) in an empty folder: the notebook finds the lake through $ASTRA_LAKE."""
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("ASTRA_LAKE", str(demo_lake))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")  # figures as outputs, as in Jupyter
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), f"{path.name} drew no plot"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebooks_keep_their_outputs(path: Path) -> None:
    """A reader on GitHub sees the results and plots without running anything."""
    import json

    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert cells and all(c["outputs"] for c in cells)
    assert any("image/png" in o.get("data", {}) for c in cells for o in c["outputs"])
    assert not any(o["output_type"] == "error" for c in cells for o in c["outputs"])
