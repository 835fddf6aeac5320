"""``astra-lake demo``: the end-to-end demonstration that the README's main command runs."""

from __future__ import annotations

from typing import Annotated

import typer

from astra_lake.cli._common import console
from astra_lake.schema import flags as F


def demo(
    path: Annotated[str, typer.Option("--path", help="Where to build the demo lake")] = "demo-lake",
) -> None:
    """Build a demo lake from the bundled fixtures plus a synthetic survey, query it and export it."""
    console.rule("Flags from data_schema/")
    value = 67108896
    console.print(f"aspcap result_flags={value}: {F.decode('aspcap', value)}")
    console.print(f"  flag_warn={F.flag_warn('aspcap', value)} flag_bad={F.flag_bad('aspcap', value)}")
    v08, v06 = F.flag_bad("astronn", 5, 8000), F.flag_bad("astronn", 5, 6000)
    console.print(f"astronn result_flags=5: flag_bad by 0.8 rules={v08}, by 0.6 rules={v06}")
