"""``astra-lake migrate``: bring a lake to this astra-lake's data_schema/ (the library does the work)."""

from __future__ import annotations

from typing import Annotated

import typer

from astra_lake.cli._common import console
from astra_lake.cli.lake_cmd import LakeOption, open_lake


def migrate(
    lake: LakeOption = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing")] = False,
) -> None:
    """Migrate the lake to this astra-lake's data_schema/: print the plan, then apply it (refuses data loss)."""
    plan = open_lake(lake).migrate(dry_run=dry_run)
    for line in plan.lines():
        console.print(line, highlight=False, markup=False, soft_wrap=True)
    if plan.applied:
        console.print("migrated", highlight=False)
    elif dry_run and not plan.current:
        console.print("dry run: nothing changed", highlight=False)
