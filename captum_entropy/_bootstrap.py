"""The one bootstrap interval of a mean (seeded percentile bootstrap over sentences): a leaf, so
the tables and figures and the evaluation harness share it without importing each other.

>>> import numpy as np
>>> m, lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 50))
>>> m, lo < 0.5 < hi
(0.5, True)
"""

from __future__ import annotations

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
