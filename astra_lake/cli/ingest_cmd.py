"""``astra-lake ingest PATH...``: bring SDSS data products into the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from astra_lake.api import Lake
from astra_lake.cli._common import console, fail
from astra_lake.cli.lake_cmd import LakeOption, resolve_lake
from astra_lake.errors import IngestError
from astra_lake.ingest.reader import FORMATS
from astra_lake.ingest.runner import Ingestor, find_files


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively for *.fits[.gz])")],
    lake: LakeOption = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Reader processes")] = 1,
    fmt: Annotated[str | None, typer.Option("--format", help=f"Force a format: {', '.join(FORMATS)}")] = None,
    batch_files: Annotated[int, typer.Option(help="Files per commit batch (bounds memory)")] = 64,
) -> None:
    """Read apStar, apVisit, BOSS spec, mwmStar, mwmVisit and astraAllStar files into the lake.

    Exit code 1 when any file failed (see the ingest_errors table); nothing of a failed file is written.
    """
    if fmt is not None and fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path, _ = resolve_lake(lake)
    lk = Lake.init(path)
    try:
        files = find_files(paths)
    except IngestError as exc:
        fail(str(exc))
    spectra = [0]
    with Progress(
        TextColumn("[bold]ingest"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task("files", total=len(files), rate="")

        def tick(n_files: int, n_spectra: int) -> None:
            spectra[0] += n_spectra
            elapsed = max(bar.tasks[0].elapsed or 1e-9, 1e-9)
            done = bar.tasks[0].completed + n_files
            bar.update(task, advance=n_files, rate=f"{done / elapsed:.1f} files/s, {spectra[0] / elapsed:.1f} spectra/s")

        summary = Ingestor(lk.catalog, fmt=fmt, workers=workers, batch_files=batch_files).run(files, tick)
    console.print(f"files read {summary.read}, skipped {summary.skipped}, failed {summary.failed} in {summary.seconds:.1f} s")
    for t, n in sorted(summary.rows.items()):
        console.print(f"  {t}: {n:,} rows")
    for e in summary.errors:
        console.print(f"  [red]failed[/] {e}", highlight=False)
    if summary.failed:
        raise typer.Exit(1)
