"""The ``--dask`` option shared by the commands that can run on a dask.distributed cluster."""

from __future__ import annotations

from typing import Annotated

import typer

DaskOption = Annotated[
    str | None,
    typer.Option(
        "--dask",
        metavar="local|ADDRESS",
        help="Process on dask.distributed: 'local' (a LocalCluster, one worker per core) or a scheduler address, "
        "e.g. tcp://10.0.0.1:8786; this process still does every commit",
    ),
]
