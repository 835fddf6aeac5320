"""The ``--dask`` option shared by the commands that can run on a dask.distributed cluster."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Annotated, Any

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


def dask_client(address: str | None) -> AbstractContextManager[Any]:
    """The client of ``--dask`` (nothing without it); dask is imported only here."""
    if address is None:
        return nullcontext()
    from astra_lake.pipelines.distributed import client_for

    return client_for(address)
