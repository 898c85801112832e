"""The one bootstrap interval of a mean (seeded percentile bootstrap over sentences): a leaf, so
the tables and figures and the evaluation harness share it without importing each other.

>>> import numpy as np
>>> m, lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 50))
>>> m, lo < 0.5 < hi
(0.5, True)

When each sentence's value is itself measured with an error (it comes from σ with error bars),
give copies of it computed from inputs moved by their errors: the result also says how much of
the interval the measurement makes.

>>> rng = np.random.default_rng(0)
>>> point = rng.normal(0, 1.0, 100); draws = point[:, None] + rng.normal(0, 0.1, (100, 200))
>>> ci = bootstrap_ci_draws(point, draws)     # sentences spread 1, each measured with SE 0.1
>>> 0.3 < ci.high - ci.low < 0.5, 0.03 < ci.errors[1] - ci.errors[0] < 0.05
(True, True)
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
    """A mean over sentences, its percentile bootstrap interval over sentences (``low``, ``high``),
    and ``errors``: the interval the per-sentence errors alone give for these very sentences."""

    mean: float
    low: float
    high: float
    n: int
    errors: tuple[float, float]


def bootstrap_ci_draws(point: np.ndarray, draws: np.ndarray, n_boot: int = 2000, level: float = 0.95,
                       seed: int = 0, bias_correct: bool = False) -> DrawsInterval:
    """The mean of ``point`` (n,) (each sentence's estimate) with ``draws`` (n, D): copies of each
    computed from its inputs moved by their own standard errors.

    The interval over sentences resamples the estimates: each already holds its measurement error,
    so their spread carries the per-sentence errors once (adding a copy's error on top would count
    them twice). ``errors`` resamples only the copies of the same sentences: how much of the
    interval the measurement alone makes. ``bias_correct`` (for a measure that is not linear in
    its inputs, such as a std or a max, which noise pushes up): each estimate is first moved by
    its copies' mean offset the other way (``2·estimate − mean(copies)``, the parametric bootstrap
    correction). Rows with a non-finite value are dropped."""
    point, draws = np.asarray(point, dtype=float), np.asarray(draws, dtype=float)
    if draws.ndim != 2 or draws.shape[0] != point.shape[0] or draws.shape[1] == 0:
        raise ValueError(f"draws must be (n, D) with n = len(point) = {point.shape[0]}, got {draws.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    keep = np.isfinite(point) & np.isfinite(draws).all(1)
    point, draws = point[keep], draws[keep]
    centre = draws.mean(1, keepdims=True)
    if bias_correct:
        point = 2 * point - centre[:, 0]
    draws = draws - centre + point[:, None]  # the copies' spread, around the (corrected) estimate
    n = point.size
    if n < 2:
        m = float(point.mean()) if n else float("nan")
        return DrawsInterval(m, float("nan"), float("nan"), n, (float("nan"),) * 2)
    rng = np.random.default_rng(seed)
    sentences = point[rng.integers(0, n, size=(n_boot, n))].mean(1)
    errors = draws[np.arange(n)[None, :], rng.integers(0, draws.shape[1], size=(n_boot, n))].mean(1)
    a = (1 - level) / 2

    def q(x: np.ndarray) -> tuple[float, float]:
        return float(np.quantile(x, a)), float(np.quantile(x, 1 - a))

    low, high = q(sentences)
    return DrawsInterval(float(point.mean()), low, high, n, q(errors))
