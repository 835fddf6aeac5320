"""Generate the DuckDB SQL library (macros + definition tables) from data_schema/.

The output, ``sql/astra_lake.sql``, is checked in; ``tests`` fail when it is not what this module
would write now.  Every object is TEMP so the file loads into any connection, read-only ones included.
"""

from __future__ import annotations

from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.model import Edition, FlagColumn, Rule, Table
from astra_lake.schema.versions import int_to_version

HEADER = "-- Generated from data_schema/ by `astra-lake schema generate`. Do not edit by hand.\n"


def lit(value: int) -> str:
    """An int64 literal DuckDB parses exactly (bit 63 included)."""
    return f"CAST({value} AS BIGINT)"


def _q(text: str | None) -> str:
    return "NULL" if text is None else "'" + text.replace("'", "''") + "'"


def rule_sql(rule: Rule, x: str) -> str:
    """SQL boolean for a compiled rule over the flag expression ``x`` (NULL in, NULL out)."""
    if rule.any_bit:
        return f"({x} <> 0)"
    terms = []
    if rule.any_mask:
        terms.append(f"(({x} & {lit(rule.any_mask)}) <> 0)")
    terms += [f"(({x} & {lit(m)}) = {lit(m)})" for m in rule.all_masks]
    return "(" + " OR ".join(terms) + ")"


def edition_condition(edition: Edition, v: str) -> str:
    parts = []
    if edition.since is not None:
        parts.append(f"{v} >= {edition.since}")
    if edition.until is not None:
        parts.append(f"{v} < {edition.until}")
    cond = " AND ".join(parts) or "TRUE"
    return f"({v} IS NULL OR {cond})" if edition.until is None else f"({cond})"


def versioned_sql(fc: FlagColumn, which: str, x: str, v: str | None) -> str | None:
    """flag_warn/flag_bad SQL for a column, CASE over editions when a version expression is given."""
    editions = [e for e in fc.editions if getattr(e, which) is not None]
    if not editions:
        return None
    if v is None or not fc.versioned:
        latest = getattr(fc.latest, which)
        return None if latest is None else rule_sql(latest, x)
    whens = []
    for e in fc.editions:
        rule = getattr(e, which)
        whens.append(f"WHEN {edition_condition(e, v)} THEN {rule_sql(rule, x) if rule else 'NULL'}")
    return "(CASE " + " ".join(whens) + " END)"


def bit_test_sql(x: str, bit: int) -> str:
    """Whether ``bit`` (a constant, 0-63) is set in ``x``: a plain expression rather than ``has_flag``,
    whose range check calls error(), which keeps DuckDB from dropping unused view columns."""
    return f"((({x} >> {bit}) & 1) = 1)"


def named_flag_sql(fc: FlagColumn, name: str, x: str, v: str | None) -> str:
    """Boolean SQL for one named flag; with a version expression, NULL where that version does not define it."""
    if v is None or not fc.versioned:
        flag = fc.latest.flag(name)
        assert flag is not None
        return bit_test_sql(x, flag.bit)
    whens = []
    for e in fc.editions:
        flag = e.flag(name)
        whens.append(f"WHEN {edition_condition(e, v)} THEN {bit_test_sql(x, flag.bit) if flag else 'NULL'}")
    return "(CASE " + " ".join(whens) + " END)"


def view_flag_columns(table: Table, has_version: bool) -> list[str]:
    """SELECT items a table view adds: flag_warn, flag_bad (where defined) and the summary column's named flags."""
    fc = table.summary_column
    if fc is None:
        return []
    v = "v_astra" if has_version else None
    items = []
    for which in ("flag_warn", "flag_bad"):
        if any(getattr(e, which) is not None for e in fc.editions):
            # the rule itself, not the library's macro: a view follows the schema it is built from (a lake
            # version written with an earlier data_schema revision keeps that revision's rules)
            items.append(f"{versioned_sql(fc, which, fc.name, v) or 'NULL'} AS {which}")
    items += [f"{named_flag_sql(fc, n, fc.name, v)} AS {n}" for n in fc.all_flag_names()]
    return items


def _summary_macros(table: Table) -> list[str]:
    fc = table.summary_column
    if fc is None:
        return []
    out = []
    for which in ("flag_warn", "flag_bad"):
        one = versioned_sql(fc, which, "flags", None)
        two = versioned_sql(fc, which, "flags", "v_astra")
        if one is None and two is None:
            continue
        one = one or "NULL"
        out.append(f"CREATE OR REPLACE TEMP MACRO {table.name}_{which}(flags) AS {one},\n    (flags, v_astra) AS {two};")
    return out


def _definition_rows(schema: Schema) -> list[str]:
    rows = []
    for table in schema.flagged_tables:
        for fc in table.flag_columns:
            for e in fc.editions:
                since = int_to_version(e.since) if e.since is not None else None
                until = int_to_version(e.until) if e.until is not None else None
                for f in e.flags:
                    aliases = "[" + ", ".join(_q(a) for a in f.aliases) + "]::VARCHAR[]"
                    rows.append(
                        f"({_q(table.name)}, {_q(fc.name)}, {f.bit}, {_q(f.name)}, {_q(f.description)}, "
                        f"{str(f.warn and e.flag_warn is not None).lower()}, {str(f.bad and e.flag_bad is not None).lower()}, "
                        f"{_q(since)}, {_q(until)}, {e.since if e.since is not None else 'NULL'}, "
                        f"{e.until if e.until is not None else 'NULL'}, {lit(f.mask)}, {aliases})"
                    )
    return rows


GENERIC = """\
CREATE OR REPLACE TEMP MACRO has_flag(value, bit) AS
    CASE WHEN bit BETWEEN 0 AND 63 THEN ((value >> bit) & 1) = 1
         ELSE error('has_flag: bit must be between 0 and 63, got ' || bit) END;
CREATE OR REPLACE TEMP MACRO v_astra_to_int(version) AS
    (split_part(version, '.', 1)::INTEGER * 1000000 + split_part(version, '.', 2)::INTEGER * 1000
     + coalesce(nullif(split_part(version, '.', 3), '')::INTEGER, 0));
CREATE OR REPLACE TEMP MACRO v_astra_to_str(v) AS
    (v // 1000000)::VARCHAR || '.' || ((v // 1000) % 1000)::VARCHAR || '.' || (v % 1000)::VARCHAR;
CREATE OR REPLACE TEMP MACRO flag_names(tbl, col, value) AS
    CASE WHEN value IS NULL THEN NULL ELSE coalesce((
        SELECT list(d.name ORDER BY d.bit) FROM flag_definitions d
        WHERE d.table_name = tbl AND d.column_name = col AND d.until_int IS NULL AND ((value >> d.bit) & 1) = 1
    ), []::VARCHAR[]) END,
    (tbl, col, value, v_astra) AS
    CASE WHEN value IS NULL THEN NULL ELSE coalesce((
        SELECT list(d.name ORDER BY d.bit) FROM flag_definitions d
        WHERE d.table_name = tbl AND d.column_name = col AND ((value >> d.bit) & 1) = 1
          AND (CASE WHEN v_astra IS NULL THEN d.until_int IS NULL
                    ELSE (d.since_int IS NULL OR v_astra >= d.since_int) AND (d.until_int IS NULL OR v_astra < d.until_int) END)
    ), []::VARCHAR[]) END;
CREATE OR REPLACE TEMP MACRO flag_value(tbl, col, names) AS coalesce((
        SELECT bit_or(d.mask) FROM flag_definitions d
        WHERE d.table_name = tbl AND d.column_name = col AND d.until_int IS NULL
          AND (list_contains(names, d.name) OR len(list_intersect(names, d.aliases)) > 0)
    ), CAST(0 AS BIGINT));
CREATE OR REPLACE TEMP MACRO sdss5_target_bit(flags, bit) AS
    CASE WHEN flags IS NULL THEN NULL
         WHEN octet_length(flags) <= bit // 8 THEN false
         ELSE ((('0x' || substr(hex(flags), 2 * (bit // 8) + 1, 2))::INTEGER >> (bit % 8)) & 1) = 1 END;
CREATE OR REPLACE TEMP MACRO sdss5_cartons(flags) AS
    CASE WHEN flags IS NULL THEN NULL ELSE coalesce((
        SELECT list(t.label ORDER BY t.bit) FROM sdss5_targeting t WHERE sdss5_target_bit(flags, t.bit)
    ), []::VARCHAR[]) END;
CREATE OR REPLACE TEMP MACRO log_linear_wavelength(crval, cdelt, npix) AS
    list_transform(range(npix), lambda i: pow(10, crval + cdelt * i));
"""


def generate_sql(schema: Schema | None = None) -> str:
    """The whole SQL library as text."""
    schema = schema or load_schema()
    parts = [HEADER, "-- Flag dictionary: one row per (table, flag column, edition, bit).\n"]
    parts.append(
        "CREATE OR REPLACE TEMP TABLE flag_definitions (table_name VARCHAR, column_name VARCHAR, bit INTEGER, "
        "name VARCHAR, description VARCHAR, in_warn BOOLEAN, in_bad BOOLEAN, since_version VARCHAR, "
        "until_version VARCHAR, since_int INTEGER, until_int INTEGER, mask BIGINT, aliases VARCHAR[]);\n"
    )
    rows = _definition_rows(schema)
    for i in range(0, len(rows), 200):
        parts.append("INSERT INTO flag_definitions VALUES\n  " + ",\n  ".join(rows[i : i + 200]) + ";\n")
    parts.append("-- SDSS-V targeting bits of sdss5_target_flags (bit b in byte b // 8, bit b % 8).\n")
    parts.append(
        "CREATE OR REPLACE TEMP TABLE sdss5_targeting (bit INTEGER, label VARCHAR, carton_pk INTEGER, "
        "program VARCHAR, mapper VARCHAR, name VARCHAR);\n"
    )
    trows = [f"({t.bit}, {_q(t.label)}, {t.carton_pk}, {_q(t.program)}, {_q(t.mapper)}, {_q(t.name)})" for t in schema.targeting]
    for i in range(0, len(trows), 200):
        parts.append("INSERT INTO sdss5_targeting VALUES\n  " + ",\n  ".join(trows[i : i + 200]) + ";\n")
    parts.append("-- Generic helpers.\n" + GENERIC)
    parts.append("-- Wavelength grids (vacuum Angstrom).\n")
    for g in schema.grids.values():
        if g.kind == "log_linear":
            args = f"{g.crval!r}, {g.cdelt!r}, {g.npix}"
            parts.append(f"CREATE OR REPLACE TEMP MACRO wavelength_{g.name}() AS log_linear_wavelength({args});\n")
    parts.append("-- flag_warn / flag_bad per table, as the seed defines them; (flags, v_astra) picks the edition.\n")
    for table in schema.flagged_tables:
        parts += [m + "\n" for m in _summary_macros(table)]
    return "".join(parts)
