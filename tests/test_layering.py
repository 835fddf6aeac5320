"""Lower layers never import higher ones: schema -> lake -> query -> ingest/kernels/pipelines -> products -> cli."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "astra_lake"
RANK = {
    "errors": 0,
    "schema": 1,
    "lake": 2,
    "query": 3,
    "ingest": 4,
    "kernels": 4,
    "pipelines": 4,
    "products": 5,
    "testing": 5,
    "config": 5,  # the user configuration: read by the api and the cli
    "api": 6,
    "cli": 7,
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "api"


def test_no_upward_imports() -> None:
    violations = []
    for path in PACKAGE.rglob("*.py"):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = ".".join(rel.parts).removesuffix(".__init__")
        if module == "astra_lake":
            continue
        here = RANK[_layer(module)]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("astra_lake"):
                targets = [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("astra_lake")]
            for t in targets:
                if t != "astra_lake" and RANK[_layer(t)] > here:
                    violations.append(f"{module} imports {t}")
    assert violations == []


def test_kernels_do_not_touch_storage() -> None:
    for path in (PACKAGE / "kernels").rglob("*.py"):
        text = path.read_text()
        assert "astra_lake.lake" not in text and "astra_lake.query" not in text, path
