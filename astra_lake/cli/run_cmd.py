"""``astra-lake run PIPELINE``: run a pipeline over the lake (incremental, resumable, recorded in ``runs``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from astra_lake.api import Lake
from astra_lake.cli._common import console
from astra_lake.cli._dask import DaskOption
from astra_lake.cli.lake_cmd import LakeOption, resolve_lake
from astra_lake.errors import AstraLakeError


class OptionError(AstraLakeError, ValueError):
    """A ``--option`` that is not ``key=value``."""


def _options(pairs: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are JSON when they parse as JSON (numbers, true/false), else text."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise OptionError(f"--option {pair!r}: expected key=value, e.g. --option mask=apogee_mask.npz")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def run(
    pipeline: Annotated[str, typer.Argument(help="Pipeline to run, e.g. the_payne or the_cannon")],
    where: Annotated[str | None, typer.Option("--where", help="SQL predicate on the input table, e.g. 'snr > 50'")] = None,
    table: Annotated[str | None, typer.Option("--table", help="Only this one of the pipeline's input tables")] = None,
    model: Annotated[Path | None, typer.Option("--model", help="Model file (its sha256 is recorded in runs)")] = None,
    workers: Annotated[int | None, typer.Option("--workers", "-w", help="Threads for the pipeline (default: all cores)")] = None,
    force: Annotated[bool, typer.Option("--force", help="Redo spectra that already have a result of this version")] = False,
    v_astra: Annotated[str | None, typer.Option("--v-astra", help="Astra version of the results (default: astra-lake's)")] = None,
    version: Annotated[str | None, typer.Option("--version", help="Read this lake version or tag (default: latest)")] = None,
    batch_rows: Annotated[int, typer.Option("--batch-rows", help="Results per commit")] = 256,
    tag: Annotated[str, typer.Option("--tag", help="Experiment tag stored on every result")] = "",
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Pipeline option key=value (repeatable)")] = None,
    dask: DaskOption = None,
    lake: LakeOption = None,
) -> None:
    """Run a pipeline: skip spectra with a current result, commit results in batches, record the run."""
    path, _ = resolve_lake(lake)
    options = _options(option or [])
    if model is not None:
        options["model"] = str(model)
    summary = Lake(path).run(
        pipeline,
        where=where,
        table=table,
        workers=workers,
        force=force,
        v_astra=v_astra,
        version=int(version) if version and version.isdigit() else version,
        batch_rows=batch_rows,
        tag=tag,
        progress=True,
        client=dask,
        **options,
    )
    console.print(summary.message, highlight=False)
