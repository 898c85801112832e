"""What the tables, figures and the page share: number formats, names, the per-row colour scale,
the marks, atomic file writes."""

from __future__ import annotations

import html
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch
from torch import Tensor

from .._bootstrap import bootstrap_ci
from .._io import atomic_write, write_text  # noqa: F401  (write_text: re-exported by viz)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..analysis import LayerExplanation
    from ..comparison import ModelComparison

NC, SAT = "~", "×"  # marks: not converged, saturated (fully forgotten)
UNORDERED, AMBIGUOUS = "≈", "?"  # marks: rank not determined by the error bars; another optimum keeps other words
NONE = "—"  # a unit where a model has no word (it truncated the sentence)
RGB = ((247, 251, 255), (107, 174, 214), (8, 48, 107))  # light -> dark blue: darker = more kept


def _fmt(v: float) -> str:
    """Compact number: 3 significant figures (more above 999), never an exponent.

    >>> _fmt(312.4), _fmt(12.34), _fmt(0.5), _fmt(1234.5)
    ('312', '12.3', '0.50', '1234')
    """
    if not math.isfinite(v):
        return "nan"
    a = abs(v)
    return f"{v:.0f}" if a >= 100 else f"{v:.1f}" if a >= 10 else f"{v:.2f}"


def _pm(half: float) -> str:
    """A half-width as printed after a value: ``±.04`` (2 decimals, no leading zero).

    >>> _pm(0.0392), _pm(1.234)
    ('±.04', '±1.23')
    """
    return f"±{half:.2f}".replace("±0.", "±.")


def _error_bars(ex: LayerExplanation, b: int, unit: str = "nats") -> tuple[Tensor, Tensor]:
    """Sentence ``b``'s words' error bars for display, each (L, W): the half-width of the 95 %
    interval (NaN where not measured) and whether the word's rank is undetermined (its interval
    overlaps its rank neighbour's; False where not measured, so nothing is marked)."""
    half = ex.word_kept_half_width(b, unit)
    return half, ex.word_undetermined(b) & torch.isfinite(half)


def _short(s: str, n: int, keep_end: bool = False) -> str:
    """At most ``n`` characters; ``keep_end``: cut the start (layer names differ at the end)."""
    s = " ".join(str(s).split())
    return s if len(s) <= n else "…" + s[1 - n:] if keep_end else s[: n - 1] + "…"


def _dim(v: float) -> str:
    """A per-dimension value (a few nats; layers differ in the second decimal): 3 decimals.

    >>> _dim(2.1504), _dim(-0.5), _dim(float("nan"))
    ('2.150', '-0.500', 'nan')
    """
    return f"{v:.3f}" if math.isfinite(v) else "nan"


def _text(ex: LayerExplanation, b: int) -> str:
    t = ex.texts[b] if b < len(ex.texts) else ""
    return " ".join(str(t).split()) or " ".join(ex.words(b))


def _cmp_text(cmp: ModelComparison, b: int) -> str:
    t = cmp.texts[b] if b < len(cmp.texts) else ""
    return " ".join(str(t).split()) or " ".join(cmp.units[b])


def _label(names: Sequence[str], c: int) -> str:
    return str(names[c]) if 0 <= c < len(names) else f"class {c}"


def _class_name(ex: LayerExplanation, c: int) -> str:
    return _label(ex.label_names, c)


def _predicted(names: Sequence[str], c: int, p: float, prefix: str = "predicted: ") -> str:
    return f"{prefix}n/a" if c < 0 else f"{prefix}{_label(names, c)} (p = {p:.2f})"


def _pred(ex: LayerExplanation, b: int) -> str:
    return _predicted(ex.label_names, int(ex.prediction[b]), float(ex.probability[b]))


def _cmp_pred(cmp: ModelComparison, m: int, b: int, prefix: str = "") -> str:
    """Model ``m``'s prediction of sentence ``b``: ``"positive (p = 0.93)"``."""
    names = cmp.label_names[m] if m < len(cmp.label_names) else []
    return _predicted(names, int(cmp.prediction[m][b]), float(cmp.probability[m][b]), prefix)


MIN_BOOTSTRAP = 5  # fewer sentences than this: no interval (a bootstrap of 2 or 3 values says nothing)
MIN_SPREAD = 0.1  # a row's colours span at least this fraction of its largest value


def _bootstrap(values: np.ndarray, n: int, seed: int) -> tuple[float, float]:
    """95 % percentile bootstrap interval of the mean (seeded resample,
    :func:`~captum_entropy._bootstrap.bootstrap_ci`); NaN below :data:`MIN_BOOTSTRAP` finite
    values."""
    v = values[np.isfinite(values)]
    if v.size < MIN_BOOTSTRAP:
        return math.nan, math.nan
    return bootstrap_ci(v, n, seed=seed)[1:]


def _depth_order(depth: Sequence[float]) -> list[int]:
    """Feature indices shallow -> deep, then the output (stable for equal depths)."""
    return [int(i) for i in np.argsort(np.asarray(depth, dtype=float), kind="stable")]


def _scaled(kept: Tensor) -> Tensor:
    """Each row to 0..1 from its min over a span of at least :data:`MIN_SPREAD` × its max, so a
    nearly uniform row stays pale instead of stretching a 1 % difference over the whole scale
    (a constant row: 0)."""
    if kept.shape[-1] == 0:
        return kept.clone()
    lo, hi = kept.min(-1, keepdim=True).values, kept.max(-1, keepdim=True).values
    span = torch.maximum(hi - lo, MIN_SPREAD * hi.abs())
    return torch.where(span > 0, (kept - lo) / torch.where(span > 0, span, torch.ones_like(span)), 0.0)


def _narrow(row: Tensor) -> bool:
    """The row's values lie within :data:`MIN_SPREAD` of its max (drawn pale by :func:`_scaled`)."""
    return row.numel() > 0 and float(row.max() - row.min()) < MIN_SPREAD * float(row.abs().max())


def _check(ex: LayerExplanation | ModelComparison, b: int, what: str = "explanation") -> int:
    if not -len(ex) <= b < len(ex):
        raise IndexError(f"sentence {b} out of range: this {what} has {len(ex)} sentences")
    return b % len(ex)


def _colour(x: float) -> tuple[int, int, int]:
    lo, mid, hi = RGB
    a, z, f = (lo, mid, x * 2) if x < 0.5 else (mid, hi, x * 2 - 1)
    return tuple(round(p + (q - p) * min(max(f, 0.0), 1.0)) for p, q in zip(a, z))  # type: ignore[return-value]


def _e(s: Any) -> str:
    """``html.escape(str(s), quote=True)``."""
    return html.escape(str(s), quote=True)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> str:
    """Save ``fig`` atomically as PNG, SVG or PDF (by the suffix); returns the path."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in ("png", "svg", "pdf"):
        raise ValueError(f"save_figure writes .png, .svg or .pdf, not {Path(path).name!r}")
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, dpi=dpi))
