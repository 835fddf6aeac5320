"""Releases are made from a tag, are byte-reproducible, and verify against their manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

import astra_lake
from astra_lake import Lake
from astra_lake.cli import app
from astra_lake.errors import ReleaseError, VersionNotFoundError
from astra_lake.ingest import synthetic as S
from astra_lake.products.release import Manifest, schema_hash, sha256_of, verify_release
from tests.products.conftest import TAG


def test_manifest_lists_every_file_with_size_and_sha256_and_the_tag(release: tuple[Path, Manifest], release_lake: Lake) -> None:
    out, manifest = release
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    assert [f["path"] for f in manifest.files] == on_disk
    for f in manifest.files[:: max(1, len(manifest.files) // 25)]:
        assert (out / f["path"]).stat().st_size == f["size"]
        assert sha256_of(out / f["path"]) == f["sha256"]
    tag = release_lake.tags()[TAG]
    assert manifest.tag == TAG and manifest.lake_version == tag["lake_version"]
    assert manifest.table_versions == tag["tables"]
    assert manifest.schema_hash == schema_hash(release_lake.catalog.schema)
    assert manifest.package_version == astra_lake.__version__
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest.files
    kinds = {f["path"].split("/")[0] for f in manifest.files}
    assert kinds == {"fits", "parquet", "hats"}


def test_the_same_tag_twice_gives_byte_identical_files(
    release: tuple[Path, Manifest], release_lake: Lake, tmp_path: Path
) -> None:
    out, manifest = release
    again = release_lake.release("test", tag=TAG, out=tmp_path / "again")
    assert (tmp_path / "again" / "manifest.json").read_bytes() == (out / "manifest.json").read_bytes()
    assert again.files == manifest.files


def test_a_release_shows_the_tag_not_the_live_head(release_lake: Lake, tmp_path: Path) -> None:
    lake = release_lake
    before = lake.release("t", tag=TAG, out=tmp_path / "before", formats=["parquet"])
    pks = lake.sql("SELECT spectrum_pk FROM apogee_star ORDER BY spectrum_pk LIMIT 3").column(0).to_numpy()
    lake.upsert("the_cannon", S.results("the_cannon", pks, seed=1))  # written after the tag
    after = lake.release("t", tag=TAG, out=tmp_path / "after", formats=["parquet"])
    assert after.files == before.files
    assert not any("the_cannon" in f["path"] for f in after.files)


def test_verify_detects_a_changed_a_missing_and_an_extra_file(release: tuple[Path, Manifest], tmp_path: Path) -> None:
    src, manifest = release
    out = tmp_path / "copy"
    shutil.copytree(src, out)
    assert verify_release(out).ok
    fits_files = [f["path"] for f in manifest.files if f["path"].endswith(".fits")]
    changed, missing = fits_files[0], fits_files[1]
    data = bytearray((out / changed).read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    (out / changed).write_bytes(bytes(data))
    (out / missing).unlink()
    (out / "parquet" / "extra.parquet").write_bytes(b"x")
    problems = verify_release(out).problems
    assert problems == [
        *sorted([f"{changed}: sha256 differs from the manifest (file changed)", f"{missing}: missing"]),
        "parquet/extra.parquet: not in the manifest (extra file)",
    ]


def test_cli_create_and_verify(release_lake: Lake, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(
        app, ["release", "create", "cli", str(out), "--tag", TAG, "--formats", "parquet", "--lake", str(release_lake.path)]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["release", "verify", str(out)])
    assert result.exit_code == 0 and "match the manifest" in result.output
    next(out.joinpath("parquet").iterdir()).write_bytes(b"changed")
    result = runner.invoke(app, ["release", "verify", str(out)])
    assert result.exit_code == 1 and "do not match the manifest" in result.output


def test_bad_requests_are_one_line_typed_errors_and_write_nothing(release_lake: Lake, tmp_path: Path) -> None:
    with pytest.raises(VersionNotFoundError, match="no tag 'nope'"):
        release_lake.release("x", tag="nope", out=tmp_path / "a")
    with pytest.raises(ReleaseError, match=r"unknown release format.*votable"):
        release_lake.release("x", tag=TAG, out=tmp_path / "b", formats=["votable"])
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "keep.txt").write_text("mine")
    with pytest.raises(ReleaseError, match="exists and is not an empty folder"):
        release_lake.release("x", tag=TAG, out=tmp_path / "c")
    assert (tmp_path / "c" / "keep.txt").read_text() == "mine"
    with pytest.raises(ReleaseError, match="not a release manifest"):
        verify_release(tmp_path / "c")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]
