"""``astra-lake release create | verify``: the files users download, built from one tag."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from astra_lake.cli._common import console, fail
from astra_lake.cli._dask import DaskOption
from astra_lake.cli.lake_cmd import LakeOption, open_lake
from astra_lake.errors import AstraLakeError
from astra_lake.products.release import FORMATS, verify_release

app = typer.Typer(help="Releases: FITS (SDSS datamodel), Parquet and HATS files of one tag.", no_args_is_help=True)
FilterOption = Annotated[Path | None, typer.Option("--filter", help="Release filter YAML (cut-off MJD, cartons, columns)")]
VersionOption = Annotated[str | None, typer.Option("--v-astra", help="Astra version of mwm* products (default: newest)")]


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Release name (recorded in the manifest)")],
    out: Annotated[Path, typer.Argument(help="New folder to write the release into")],
    tag: Annotated[str, typer.Option("--tag", help="The tag to release (never the live head)")],
    formats: Annotated[str, typer.Option("--formats", help="Comma-separated: fits, parquet, hats")] = ",".join(FORMATS),
    filter_file: FilterOption = None,
    v_astra: VersionOption = None,
    dask: DaskOption = None,
    lake: LakeOption = None,
) -> None:
    """Build a release of a tag into OUT (fixed timestamps and order: the same tag gives the same bytes)."""
    lk = open_lake(lake)
    try:
        manifest = lk.release(
            name,
            tag=tag,
            out=out,
            formats=formats.split(","),
            release_filter=filter_file,
            v_astra=v_astra,
            progress=True,
            client=dask,
        )
    except AstraLakeError as exc:
        fail(str(exc))
    size = sum(f["size"] for f in manifest.files)
    console.print(f"release {name!r} of tag {tag!r}: {len(manifest.files)} files, {size / 1e6:.1f} MB in {out}")


@app.command("verify")
def verify(out: Annotated[Path, typer.Argument(help="A release folder (with manifest.json)")]) -> None:
    """Check every file against the manifest (size, sha256) and that none is missing or extra; exit 1 if not."""
    try:
        result = verify_release(out)
    except AstraLakeError as exc:
        fail(str(exc))
    for problem in result.problems:
        console.print(f"[red]{problem}[/]", highlight=False)
    if not result.ok:
        fail(f"{out}: {len(result.problems)} of {result.checked} files do not match the manifest", code=1)
    console.print(f"{out}: all {result.checked} files match the manifest (tag {result.manifest.tag!r})")
