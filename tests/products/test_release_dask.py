"""``release create`` on a dask.distributed cluster: workers write the summary FITS files and the Parquet /
HATS tables, this process checksums and renames; the release is byte-identical to the serial one."""

from __future__ import annotations

from pathlib import Path

import pytest

from astra_lake import Lake
from astra_lake.products.release import Manifest
from tests.products.conftest import TAG

distributed = pytest.importorskip("distributed")


def test_dask_release_is_byte_identical(release: tuple[Path, Manifest], release_lake: Lake, tmp_path: Path) -> None:
    out, manifest = release
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0")
    with cluster, distributed.Client(cluster) as client:
        again = release_lake.release("test", tag=TAG, out=tmp_path / "dask", client=client)
    assert (tmp_path / "dask" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    assert again.files == manifest.files and any(f["path"].startswith("fits/") for f in again.files)
    assert not list(tmp_path.glob(".*partial"))
