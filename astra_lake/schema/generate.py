"""Write (or check) every file generated from data_schema/: SQL library, Arrow schemas, flag docs."""

from __future__ import annotations

from pathlib import Path

from astra_lake.schema.arrow import describe_schemas
from astra_lake.schema.loader import Schema, load_schema
from astra_lake.schema.sql_gen import generate_sql
from astra_lake.schema.versions import int_to_version


def flags_markdown(schema: Schema) -> str:
    """Human-readable flag reference (one section per table and flag column)."""
    lines = ["# Flag reference\n", "Generated from data_schema/ by `astra-lake schema generate`. Do not edit by hand.\n"]
    for table in schema.flagged_tables:
        lines.append(f"\n## {table.name}\n")
        for fc in table.flag_columns:
            for e in fc.editions:
                span = ""
                if fc.versioned:
                    lo = int_to_version(e.since) if e.since is not None else "any"
                    hi = int_to_version(e.until) if e.until is not None else "newest"
                    span = f" (v_astra {lo} .. {hi}; {e.source})"
                summary = ""
                if fc.summary:
                    summary = f" flag_warn: {e.flag_warn.kind if e.flag_warn else 'not defined'};"
                    summary += f" flag_bad: {e.flag_bad.kind if e.flag_bad else 'not defined'}."
                lines.append(f"\n### `{fc.name}`{span}\n\n{fc.note}{summary}\n")
                if not e.flags:
                    lines.append("\nNo named bits.\n")
                    continue
                lines.append("\n| bit | name | description | warn | bad |\n|---:|---|---|:-:|:-:|\n")
                for f in e.flags:
                    alias = f" (alias: {', '.join(f.aliases)})" if f.aliases else ""
                    w = "yes" if f.warn and e.flag_warn else ""
                    b = "yes" if f.bad and e.flag_bad else ""
                    lines.append(f"| {f.bit} | `{f.name}`{alias} | {f.description} | {w} | {b} |\n")
    return "".join(lines)


def generated_files(schema: Schema | None = None) -> dict[Path, str]:
    """Path (relative to the project root) -> content, for every generated file."""
    from astra_lake.schema.products import generate_products, generated_dir

    schema = schema or load_schema()
    products = generated_dir(schema).relative_to(schema.directory.parent)
    return {
        Path("sql/astra_lake.sql"): generate_sql(schema),
        Path("data_schema/generated/arrow_schemas.json"): describe_schemas(schema),
        Path("data_schema/generated/FLAGS.md"): flags_markdown(schema),
        **{products / name: text for name, text in generate_products(schema).items()},
    }


def project_root() -> Path:
    return load_schema().directory.parent


def write_generated(root: Path | None = None) -> list[Path]:
    """Regenerate every file; returns the ones whose content changed."""
    root = root or project_root()
    changed = []
    for rel, text in generated_files().items():
        path = root / rel
        if not path.exists() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            changed.append(rel)
    return changed


def stale_generated(root: Path | None = None) -> list[Path]:
    """Generated files that differ from a fresh generation (empty when everything is current)."""
    root = root or project_root()
    return [rel for rel, text in generated_files().items() if not (root / rel).exists() or (root / rel).read_text() != text]


def sql_library_path() -> Path:
    """Where the generated SQL library is (in a checkout or inside the installed package)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here / "_data" / "sql" / "astra_lake.sql", here.parent / "sql" / "astra_lake.sql"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"sql/astra_lake.sql not found next to {here}; run `astra-lake schema generate`")
