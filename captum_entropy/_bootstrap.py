"""The one bootstrap interval of a mean (seeded percentile bootstrap over sentences): a leaf, so
the tables and figures and the evaluation harness share it without importing each other.

>>> import numpy as np
>>> m, lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 50))
>>> m, lo < 0.5 < hi
(0.5, True)

When each sentence's value is itself uncertain (it comes from σ with error bars), give its
perturbed copies too: the interval then holds both the spread over sentences and the per-sentence
errors, and says how wide each part alone would be.

>>> rng = np.random.default_rng(0)
>>> point = np.zeros(100); draws = point[:, None] + rng.normal(0, 1.0, (100, 200))
>>> ci = bootstrap_ci_draws(point, draws)     # every sentence 0, each measured with SE 1
>>> round(ci.sentences[1] - ci.sentences[0], 2), 0.3 < ci.high - ci.low < 0.5
(0.0, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


def bootstrap_ci(values: Sequence[float] | np.ndarray, n_boot: int = 2000, level: float = 0.95,
                 seed: int = 0) -> tuple[float, float, float]:
    """Mean of ``values`` (NaN dropped) and its percentile bootstrap interval (seeded)."""
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    if v.size == 0:
        raise ValueError("bootstrap_ci got no finite values")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, size=(n_boot, v.size))].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


@dataclass(frozen=True)
class DrawsInterval:
    """A mean over sentences and its percentile bootstrap intervals: ``low``/``high`` with both
    sources of uncertainty, ``sentences`` from the sentences alone (each at its estimate), ``errors``
    from the per-sentence errors alone (the same sentences, each at a perturbed copy)."""

    mean: float
    low: float
    high: float
    n: int
    sentences: tuple[float, float]
    errors: tuple[float, float]


def bootstrap_ci_draws(point: np.ndarray, draws: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0) -> DrawsInterval:
    """The mean of ``point`` (n,) with a two-level percentile bootstrap: each replicate resamples the
    sentences and takes, for each, a random one of its perturbed copies ``draws`` (n, D) (copies
    made from the sentence's own standard errors). Each sentence's copies are first recentred on
    its estimate: they carry its spread, while their mean offset is the bias a nonlinear measure
    (a std, a max) takes from noise added on top of an estimate that already holds it. Rows with
    a non-finite estimate are dropped."""
    point, draws = np.asarray(point, dtype=float), np.asarray(draws, dtype=float)
    if draws.ndim != 2 or draws.shape[0] != point.shape[0] or draws.shape[1] == 0:
        raise ValueError(f"draws must be (n, D) with n = len(point) = {point.shape[0]}, got {draws.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    keep = np.isfinite(point) & np.isfinite(draws).all(1)
    point, draws = point[keep], draws[keep]
    draws = draws - draws.mean(1, keepdims=True) + point[:, None]
    n = point.size
    if n < 2:
        m = float(point.mean()) if n else float("nan")
        return DrawsInterval(m, float("nan"), float("nan"), n, (float("nan"),) * 2, (float("nan"),) * 2)
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, n, size=(n_boot, n))
    both = draws[rows, rng.integers(0, draws.shape[1], size=(n_boot, n))].mean(1)
    sentences = point[rows].mean(1)
    errors = draws[np.arange(n)[None, :], rng.integers(0, draws.shape[1], size=(n_boot, n))].mean(1)
    a = (1 - level) / 2

    def q(x: np.ndarray) -> tuple[float, float]:
        return float(np.quantile(x, a)), float(np.quantile(x, 1 - a))

    low, high = q(both)
    return DrawsInterval(float(point.mean()), low, high, n, q(sentences), q(errors))
