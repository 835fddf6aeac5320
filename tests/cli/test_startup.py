"""The CLI and ``import astra_lake`` start without the heavy libraries (bench/bench_cli.py times them)."""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "pyarrow", "duckdb", "polars", "numba", "scipy", "astropy", "cdshealpix", "deltalake", "yaml", "pandas")

CHILD = """
import sys
args = sys.argv[1:]
if args == ["import"]:
    import astra_lake
else:
    from astra_lake.cli import main
    sys.argv = ["astra-lake", *args]
    try:
        main()
    except SystemExit as exc:
        assert exc.code == 0, exc.code
print(" ".join(sorted(m for m in {heavy!r} if m in sys.modules)))
"""


@pytest.mark.parametrize("args", [["import"], ["--help"], ["--version"], ["flags", "aspcap", "67108896"], ["flags"]])
def test_starts_without_heavy_imports(args: list[str]) -> None:
    load_schema_first = [sys.executable, "-c", "from astra_lake.schema.loader import load_schema; load_schema()"]
    subprocess.run(load_schema_first, check=True)  # the on-disk schema cache, as after any earlier run
    code = CHILD.format(heavy=HEAVY)
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "", f"{args} imported {out.splitlines()[-1]}"


def test_lake_attributes_still_resolve() -> None:
    import astra_lake
    from astra_lake.api import Lake

    assert astra_lake.Lake is Lake and callable(astra_lake.connect) and callable(astra_lake.scan)
    assert astra_lake.flags.decode("aspcap", 32) == ["flag_teff_grid_edge_warn"]
    assert astra_lake.errors.AstraLakeError.__name__ == "AstraLakeError"
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        _ = astra_lake.nope  # type: ignore[attr-defined]
