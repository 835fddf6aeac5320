"""Flag semantics as Polars expressions (the twins of the DuckDB macros in sql/astra_lake.sql).

>>> import polars as pl
>>> df = pl.DataFrame({"result_flags": [0, 32, 67108896]})
>>> df.select(flag_bad("aspcap")).to_series().to_list()
[False, False, True]
"""

from __future__ import annotations

import polars as pl

from astra_lake.schema.flags import summary_rule
from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.model import Edition, Rule


def _rule_expr(rule: Rule, x: pl.Expr) -> pl.Expr:
    if rule.any_bit:
        return x != 0
    terms: list[pl.Expr] = []
    if rule.any_mask:
        terms.append((x & pl.lit(rule.any_mask, dtype=pl.Int64)) != 0)
    terms += [(x & pl.lit(m, dtype=pl.Int64)) == pl.lit(m, dtype=pl.Int64) for m in rule.all_masks]
    out = terms[0]
    for t in terms[1:]:
        out = out | t
    return out


def _covers(edition: Edition, v: pl.Expr) -> pl.Expr:
    cond = pl.lit(True)
    if edition.since is not None:
        cond = cond & (v >= edition.since)
    if edition.until is not None:
        cond = cond & (v < edition.until)
    return (v.is_null() | cond) if edition.until is None else cond


def summary_expr(
    table: str, which: str, *, column: str | None = None, v_astra: str | None = "v_astra", schema: Schema | None = None
) -> pl.Expr:
    """flag_warn/flag_bad of ``table`` as an expression; versioned tables switch on the ``v_astra`` column.
    ``schema``: the data_schema to take the rules from (default the package's; a lake version's own)."""
    fc = (schema or load_schema()).table(table).summary_column
    if schema is None:
        summary_rule(table, which, None)  # type: ignore[arg-type]  # raises a clear error if undefined
    assert fc is not None
    x = pl.col(column or fc.name).cast(pl.Int64)
    if not fc.versioned or v_astra is None:
        return _rule_expr(getattr(fc.latest, which), x).alias(which)
    v = pl.col(v_astra)
    expr = pl.lit(None, dtype=pl.Boolean)
    for edition in reversed(fc.editions):
        rule = getattr(edition, which)
        value = _rule_expr(rule, x) if rule is not None else pl.lit(None, dtype=pl.Boolean)
        expr = pl.when(_covers(edition, v)).then(value).otherwise(expr)
    return expr.alias(which)


def flag_warn(table: str, *, column: str | None = None, v_astra: str | None = "v_astra") -> pl.Expr:
    """``flag_warn`` of a pipeline as a Polars expression (null flags give null)."""
    return summary_expr(table, "flag_warn", column=column, v_astra=v_astra)


def flag_bad(table: str, *, column: str | None = None, v_astra: str | None = "v_astra") -> pl.Expr:
    """``flag_bad`` of a pipeline as a Polars expression (null flags give null)."""
    return summary_expr(table, "flag_bad", column=column, v_astra=v_astra)


def has_flag(table: str, name: str, *, column: str | None = None, schema: Schema | None = None) -> pl.Expr:
    """Whether the named flag (newest edition) is set, e.g. ``has_flag("aspcap", "flag_low_snr")``."""
    fc = (schema or load_schema()).table(table).flag_column(column)
    flag = fc.latest.flag(name)
    if flag is None:
        from astra_lake.errors import FlagError

        raise FlagError(f"{table}.{fc.name} has no flag {name!r}")
    return ((pl.col(fc.name).cast(pl.Int64) & pl.lit(flag.mask, dtype=pl.Int64)) != 0).alias(flag.name)


def named_flag_exprs(table: str, schema: Schema | None = None) -> list[pl.Expr]:
    """One boolean expression per named flag of the table's summary column (newest edition)."""
    fc = (schema or load_schema()).table(table).summary_column
    return [] if fc is None else [has_flag(table, f.name, schema=schema) for f in fc.latest.flags]
