"""``astra-lake flags``: list, show and decode flags straight from data_schema/."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table as RichTable

from astra_lake.cli._common import console, fail
from astra_lake.errors import AstraLakeError
from astra_lake.schema import flags as F
from astra_lake.schema.loader import load_schema
from astra_lake.schema.versions import version_to_int


def flags(
    table: Annotated[str | None, typer.Argument(help="Pipeline or table, e.g. aspcap")] = None,
    value: Annotated[str | None, typer.Argument(help="Integer flag value to decode (decimal or 0x hex)")] = None,
    column: Annotated[str | None, typer.Option("--column", "-c", help="Flag column (default: the summary column)")] = None,
    v_astra: Annotated[str | None, typer.Option("--v-astra", help="Judge by the rules of this Astra version, e.g. 0.6.0")] = None,
) -> None:
    """List flag columns; show one table's flags; or decode a value into flag names and warn/bad."""
    schema = load_schema()
    if table is None:
        _list_all()
        return
    try:
        tbl = schema.table(table)
        if not tbl.flag_columns:
            fail(f"table {table!r} has no flag columns; tables with flags: {', '.join(t.name for t in schema.flagged_tables)}")
        fc = tbl.flag_column(column) if column or tbl.summary_column else tbl.flag_columns[0]
        version = version_to_int(v_astra) if v_astra else None
        if value is None:
            _show(tbl.name, fc.name, version)
        else:
            _decode(tbl.name, fc.name, int(value, 0), version)
    except (AstraLakeError, ValueError) as exc:
        fail(str(exc))


def _list_all() -> None:
    out = RichTable(title="Tables with flag columns", show_lines=False)
    for col in ("table", "kind", "flag columns", "flag_warn", "flag_bad"):
        out.add_column(col)
    for tbl in load_schema().flagged_tables:
        defined = F.defines(tbl)
        names = [fc.name + ("*" if fc.summary else "") for fc in tbl.flag_columns]
        out.add_row(
            tbl.name,
            tbl.kind,
            ", ".join(names),
            "yes" if "flag_warn" in defined else "-",
            "yes" if "flag_bad" in defined else "-",
        )
    console.print(out)
    console.print("* summary column: drives flag_warn/flag_bad and the named boolean columns of the SQL views")


def _show(table: str, column: str, version: int | None) -> None:
    fc = F.flag_column(table, column)
    edition = fc.edition_for(version)
    title = f"{table}.{column}" + (f" ({edition.source})" if fc.versioned else "")
    out = RichTable(title=title)
    for col in ("bit", "name", "description", "warn", "bad"):
        out.add_column(col, overflow="fold")
    for f in edition.flags:
        alias = f"\n(alias {', '.join(f.aliases)})" if f.aliases else ""
        warn = "yes" if f.warn and edition.flag_warn else ""
        bad = "yes" if f.bad and edition.flag_bad else ""
        out.add_row(str(f.bit), f.name + alias, f.description, warn, bad)
    console.print(out)
    if fc.summary:
        for which in ("flag_warn", "flag_bad"):
            rule = getattr(edition, which)
            console.print(f"{which}: " + (rule.kind if rule else "not defined"))


def _decode(table: str, column: str, value: int, version: int | None) -> None:
    names = F.decode(table, value, column, version)
    fc = F.flag_column(table, column)
    edition = fc.edition_for(version)
    console.print(f"{table}.{column} = {value}")
    for name in names:
        flag = edition.flag(name)
        assert flag is not None
        marks = [w for w, on in (("warn", flag.warn and edition.flag_warn), ("bad", flag.bad and edition.flag_bad)) if on]
        console.print(f"  bit {flag.bit:2d}  {name}" + (escape(f"  [{', '.join(marks)}]") if marks else ""), highlight=False)
    extra = F.undefined_bits(edition, value)
    if extra:
        console.print(f"  undefined bits set: {extra}")
    if fc.summary:
        for which in ("flag_warn", "flag_bad"):
            rule = getattr(edition, which)
            if rule is not None:
                result = F.evaluate(table, which, value, version)  # type: ignore[arg-type]
                why = [n for n in names if rule.any_bit or any(n in clause for clause in rule.flags)]
                console.print(
                    f"{which}: {result}" + (f" (because of {', '.join(why)})" if result and why else ""), highlight=False
                )
