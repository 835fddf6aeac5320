"""Lake-wide sequences (``roles.minted`` of data_schema/common.yaml: source_pk, spectrum_pk, task_pk):
minted in blocks, never reused.

A block is reserved under an exclusive lock and the new high-water mark is fsynced before the
numbers are handed out, so concurrent writers get disjoint ranges and a killed writer only leaves a gap.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from astra_lake.lake.locks import atomic_write_text, exclusive
from astra_lake.schema.loader import load_schema


class Sequences:
    """Monotonic counters stored in ``_meta/sequences.json``."""

    def __init__(self, meta_dir: Path, names: tuple[str, ...] | None = None) -> None:
        self.path = meta_dir / "sequences.json"
        self.lock = meta_dir / "sequences.lock"
        self.names = load_schema().roles.sequences if names is None else names

    def _check(self, name: str) -> None:
        if name not in self.names:
            raise ValueError(f"unknown sequence {name!r}; valid: {', '.join(self.names)}")

    def reserve(self, name: str, n: int) -> npt.NDArray[np.int64]:
        """``n`` fresh values of sequence ``name`` (starting at 1)."""
        self._check(name)
        if n <= 0:
            return np.empty(0, dtype=np.int64)
        with exclusive(self.lock):
            state = json.loads(self.path.read_text()) if self.path.exists() else {}
            start = int(state.get(name, 0)) + 1
            state[name] = start + n - 1
            atomic_write_text(self.path, json.dumps(state, sort_keys=True))
        return np.arange(start, start + n, dtype=np.int64)

    def advance_to(self, name: str, value: int) -> None:
        """Make the next value of ``name`` larger than ``value``: rows that arrive with their own
        identities (e.g. imported from Astra) must never collide with values minted later."""
        self._check(name)
        if int(self.current().get(name, 0)) >= value:  # counters only grow: no lock needed to skip
            return
        with exclusive(self.lock):
            state = json.loads(self.path.read_text()) if self.path.exists() else {}
            if int(state.get(name, 0)) < value:
                state[name] = int(value)
                atomic_write_text(self.path, json.dumps(state, sort_keys=True))

    def current(self) -> dict[str, int]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}
