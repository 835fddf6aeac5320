"""Per-result timing with upstream Astra's semantics (its ``@task`` decorator and ``Timer``).

Time between two marks is either attributed to the results produced in it (``t_elapsed``) or counted
as overhead (reading input, loading a model, bookkeeping). Writes are excluded (:meth:`Timer.paused`).
At every flush the overhead so far is spread as a running mean over all results so far:
``o = overheads / n_results``; each flushed result gets ``t_elapsed += o`` and ``t_overhead = o``, so
results in early batches carry the mean at their flush, as upstream does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import numpy.typing as npt


class Timer:
    """Marks intervals as result time or overhead; ``clock`` is injectable for tests."""

    def __init__(self, clock: object = time.perf_counter) -> None:
        self._clock = clock
        self.overheads = 0.0
        self.n_results = 0
        self._last = self._now()
        self._paused = 0.0

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _interval(self) -> float:
        now = self._now()
        interval = now - self._last - self._paused
        self._last, self._paused = now, 0.0
        return max(interval, 0.0)

    def overhead(self) -> float:
        """Count the time since the last mark as overhead; returns it."""
        interval = self._interval()
        self.overheads += interval
        return interval

    def results(self, n: int) -> float:
        """Attribute the time since the last mark to ``n`` new results; returns that time."""
        self.n_results += n
        return self._interval()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Time inside is neither result time nor overhead (upstream pauses around database writes)."""
        start = self._now()
        try:
            yield
        finally:
            self._paused += self._now() - start

    def add_overheads(self, t_elapsed: npt.NDArray[np.float64]) -> tuple[npt.NDArray[np.float64], float]:
        """(t_elapsed + mean overhead per result so far, that mean) for results about to be written."""
        mean = self.overheads / self.n_results if self.n_results else 0.0
        return t_elapsed + mean, mean
