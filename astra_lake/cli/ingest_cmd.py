"""``astra-lake ingest PATH...``: bring SDSS data products into the lake."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from astra_lake.api import Lake
from astra_lake.cli._common import console, fail
from astra_lake.cli._dask import DaskOption, dask_client
from astra_lake.cli.lake_cmd import LakeOption, resolve_lake
from astra_lake.config import Config
from astra_lake.errors import IngestError
from astra_lake.ingest.inputs import SUFFIXES, scan_inputs
from astra_lake.ingest.reader import FORMATS
from astra_lake.ingest.runner import Ingestor


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (searched recursively for *.fits[.gz])")],
    lake: LakeOption = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", min=1, help="Reader processes (default: config, 1)")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=f"Force a format: {', '.join(FORMATS)}")] = None,
    batch_files: Annotated[
        int | None, typer.Option(min=1, help="Files per commit batch, bounds memory (default: config, 64)")
    ] = None,
    create: Annotated[bool, typer.Option("--create", help="Create the lake if the path is not one yet")] = False,
    dask: DaskOption = None,
) -> None:
    """Read SDSS files into the lake: apStar, apVisit, spec, mwm*, astraAll*, spAll, allStar/Visit (DR19, DR17), mwmTargets.

    Exit code 0: every file was ingested (or unchanged); 1: some file failed (each is one row of the
    ingest_errors table, naming file, HDU, row and column; nothing of it was written); 2: nothing was
    done: unknown --format, a path that does not exist, no FITS files found, or a lake path that is
    not a lake (give --create to make one).
    """
    if fmt is not None and fmt not in FORMATS:
        fail(f"unknown --format {fmt!r}; choose one of {', '.join(FORMATS)}")
    path, origin = resolve_lake(lake)
    if not (path / "lake.json").exists() and not create:
        fail(f"{path} (from {origin}) is not an astra-lake (no lake.json); give --create to create it, or --lake another path")
    try:
        inputs = scan_inputs(paths)
    except IngestError as exc:
        fail(str(exc))
    if not inputs.files and not inputs.problems:
        fail(f"no FITS files ({', '.join('*' + s for s in SUFFIXES)}) under {', '.join(map(str, paths))}")
    cfg = Config.load()
    workers = workers or cfg.get("ingest.workers") or 1
    batch_files = batch_files or cfg.get("ingest.batch_files") or 64
    lk = Lake.init(path, auto_compact_min_files=cfg.get("compaction.auto_compact_min_files")) if create else Lake(path)
    spectra = [0]
    with (
        dask_client(dask) as client,
        Progress(
            TextColumn("[bold]ingest"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        ) as bar,
    ):
        task = bar.add_task("files", total=len(inputs.files), rate="")

        def tick(n_files: int, n_spectra: int) -> None:
            spectra[0] += n_spectra
            elapsed = max(bar.tasks[0].elapsed or 1e-9, 1e-9)
            done = bar.tasks[0].completed + n_files
            bar.update(task, advance=n_files, rate=f"{done / elapsed:.1f} files/s, {spectra[0] / elapsed:.1f} spectra/s")

        summary = Ingestor(lk.catalog, fmt=fmt, workers=workers, batch_files=batch_files, client=client).run(
            inputs.files, tick, problems=inputs.problems
        )
    console.print(f"files read {summary.read}, skipped {summary.skipped}, failed {summary.failed} in {summary.seconds:.1f} s")
    replaced = summary.replaced
    for t, n in sorted(summary.rows.items()):
        note = f"; {replaced[t]:,} rows given were replaced by later rows with the same key" if t in replaced else ""
        console.print(f"  {t}: {n:,} rows stored{note}", soft_wrap=True)
    for note in summary.notes:  # DRP summaries: rows updated, inserted, left out
        console.print(f"  {note}", highlight=False, soft_wrap=True)
    for e in summary.errors:
        console.print(f"  [red]failed[/] {e}", highlight=False, soft_wrap=True)
    if summary.failed:
        raise typer.Exit(1)
