"""Statistics for comparing attribution methods: bootstrap intervals, paired tests, win/tie/loss.

Everything resamples or pairs *sentences* (the unit that is independent); scipy does the tests.

>>> import numpy as np
>>> m, lo, hi = bootstrap_ci(np.array([0.0, 1.0] * 50))
>>> m, lo < 0.5 < hi
(0.5, True)
>>> holm([0.01, 0.04, 0.03])        # Holm's step-down adjustment
[0.03, 0.06, 0.06]
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .._bootstrap import bootstrap_ci  # noqa: F401  (the one bootstrap; part of this module's API)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (same order as given; NaN stays NaN)."""
    p = np.asarray(p_values, dtype=float)
    ok = np.flatnonzero(~np.isnan(p))
    out = np.full(p.shape, np.nan)
    order = ok[np.argsort(p[ok], kind="stable")]
    m, running = len(order), 0.0
    for i, j in enumerate(order):
        running = max(running, min(1.0, (m - i) * p[j]))
        out[j] = running
    return [float(round(x, 12)) for x in out]


def paired_wilcoxon(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, int]:
    """Two-sided paired Wilcoxon signed-rank test of ``a`` against ``b`` over the pairs where
    both are finite: ``(shift, p-value, n pairs)``. ``shift`` is the Hodges–Lehmann estimate of
    ``a − b`` (the median of the pairwise means of the differences: the estimate that goes with
    this test, so its sign is the side the test found); p = 1 when every difference is 0, NaN
    with fewer than 2 pairs."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples need the same shape, got {x.shape} and {y.shape}")
    keep = np.isfinite(x) & np.isfinite(y)
    d = x[keep] - y[keep]
    if d.size < 2:
        return (float(d[0]) if d.size else float("nan")), float("nan"), int(d.size)
    if not np.any(d):
        return 0.0, 1.0, int(d.size)
    i, j = np.triu_indices(d.size)
    shift = float(np.median((d[i] + d[j]) / 2))
    return shift, float(wilcoxon(x[keep], y[keep]).pvalue), int(d.size)


def win_tie_loss(scores: Mapping[str, Sequence[float]], higher_is_better: bool = True, alpha: float = 0.05,
                 reference: str | None = None) -> list[dict]:
    """Paired comparisons of methods on one metric over sentences: every pair, or only
    ``reference`` against each other method. Each row: the Hodges–Lehmann shift (first − other),
    the Wilcoxon p-value, Holm-adjusted over the comparisons made, and the verdict for the first
    method (``"win"``/``"loss"`` when the adjusted p < ``alpha``, by the side of the shift, else
    ``"tie"``)."""
    names = list(scores)
    if reference is not None and reference not in scores:
        raise ValueError(f"no method {reference!r} among {names}")
    pairs = [(reference, o) for o in names if o != reference] if reference is not None else \
        [(a, b) for i, a in enumerate(names) for b in names[i + 1:]]
    rows = []
    for a, b in pairs:
        shift, p, n = paired_wilcoxon(scores[a], scores[b])
        rows.append({"method": a, "other": b, "shift": shift, "p": p, "n": n})
    for row, adj in zip(rows, holm([r["p"] for r in rows])):
        row["p_holm"] = adj
        better = row["shift"] > 0 if higher_is_better else row["shift"] < 0
        row["verdict"] = "tie" if not adj < alpha or row["shift"] == 0 else ("win" if better else "loss")
    return rows
