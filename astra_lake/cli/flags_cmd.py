"""``astra-lake flags``: list, show and decode flags straight from data_schema/."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from astra_lake.cli._common import console
from astra_lake.errors import FlagError, InvalidArgumentError

if TYPE_CHECKING:
    from astra_lake.schema.model import Edition, Flag

# A value like -5 is a flag value (int64 patterns with bit 63 set are negative), not an option.
CONTEXT_SETTINGS = {"ignore_unknown_options": True}


def flags(
    table: Annotated[str | None, typer.Argument(help="Pipeline or table, e.g. aspcap")] = None,
    value: Annotated[str | None, typer.Argument(help="Integer flag value to decode (decimal, negative, or 0x hex)")] = None,
    column: Annotated[str | None, typer.Option("--column", "-c", help="Flag column (default: the summary column)")] = None,
    v_astra: Annotated[str | None, typer.Option("--v-astra", help="Judge by the rules of this Astra version, e.g. 0.6.0")] = None,
) -> None:
    """List flag columns; show one table's flags; or decode a value into flag names and warn/bad."""
    from astra_lake.schema.loader import load_schema
    from astra_lake.schema.versions import version_to_int

    if table is None:
        _list_all()
        return
    schema = load_schema()
    tbl = schema.table(table)
    if not tbl.flag_columns:
        tables = ", ".join(t.name for t in schema.flagged_tables)
        raise InvalidArgumentError(f"table {table!r} has no flag columns; tables with flags: {tables}")
    fc = tbl.flag_column(column) if column or tbl.summary_column else tbl.flag_columns[0]
    try:
        version = version_to_int(v_astra) if v_astra else None
    except ValueError as exc:
        raise InvalidArgumentError(f"--v-astra: {exc}") from None
    if value is None:
        _show(tbl.name, fc.name, version)
    else:
        _decode(tbl.name, fc.name, _integer(value), version)


def _integer(text: str) -> int:
    if text.startswith("--"):
        raise InvalidArgumentError(f"no such option {text}; see `astra-lake flags --help`")
    try:
        return int(text, 0)
    except ValueError:
        raise FlagError(
            f"flag value {text!r} is not an integer; give a decimal (67108896, -5) or hexadecimal (0x4000020) value"
        ) from None


def _list_all() -> None:
    from rich.table import Table as RichTable

    from astra_lake.schema import flags as F
    from astra_lake.schema.loader import load_schema

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


def _in_rules(flag: Flag, edition: Edition) -> list[str]:
    """Which summary rules a flag takes part in (taking part is not deciding: all_of needs every term)."""
    marks = (("warn", flag.warn and edition.flag_warn), ("bad", flag.bad and edition.flag_bad))
    return [f"in the {which} rule" for which, on in marks if on]


def _show(table: str, column: str, version: int | None) -> None:
    from rich.table import Table as RichTable

    from astra_lake.schema import flags as F

    fc = F.flag_column(table, column)
    edition = fc.edition_for(version)
    title = f"{table}.{column}" + (f" ({edition.source})" if fc.versioned else "")
    out = RichTable(title=title)
    out.add_column("bit")
    out.add_column("name", no_wrap=True)
    out.add_column("description", overflow="fold")
    out.add_column("in warn rule")
    out.add_column("in bad rule")
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
    from astra_lake.schema import flags as F

    names = F.decode(table, value, column, version)
    fc = F.flag_column(table, column)
    edition = fc.edition_for(version)
    console.print(f"{table}.{column} = {value}", highlight=False)
    for name in names:
        flag = edition.flag(name)
        assert flag is not None
        rules = _in_rules(flag, edition)
        console.print(f"  bit {flag.bit:2d}  {name}" + (escape(f"  [{', '.join(rules)}]") if rules else ""), highlight=False)
    extra = F.undefined_bits(edition, value)
    if extra:
        console.print(f"  undefined bits set: {extra}", highlight=False)
    if fc.summary:
        for which in ("flag_warn", "flag_bad"):
            rule = getattr(edition, which)
            if rule is not None:
                result = F.evaluate(table, which, value, version)  # type: ignore[arg-type]
                why = [n for n in names if rule.any_bit or any(n in clause for clause in rule.flags)]
                console.print(
                    f"{which}: {result}" + (f" (because of {', '.join(why)})" if result and why else ""), highlight=False
                )
