"""Matplotlib figures: words × features heatmap of one sentence, entropy against depth; for a
:class:`~captum_entropy.comparison.ModelComparison`, entropy against relative depth per model and one
sentence's word units × models.

Matplotlib is imported inside the functions (the package imports without it); the figures are
``matplotlib.figure.Figure`` objects, never pyplot's, so nothing is shown and no GUI is needed.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np

from .._names import OUTPUT, OUTPUT_DEPTH
from ._common import (AMBIGUOUS, NONE, SAT, UNORDERED, _bootstrap, _check, _cmp_pred, _cmp_text, _depth_order, _dim,
                      _error_bars, _narrow, _pm, _pred, _scaled, _short, _text)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..analysis import LayerExplanation
    from ..comparison import ModelComparison

KINDS = ("heatmap", "depth")
COMPARISON_KINDS = ("depth", "words")
SHARE_LABEL = "share of the sentence's kept information\nper dimension (%)"
MISSING_LABEL = "no word of this model here (it truncated the sentence)"
GREY = "#c4c4c4"
SCALE_LABEL = "kept information per dimension,\nscaled per row (0 = row min,\n1 = row max; spread < 10 %: pale)"


def _figure_class() -> type:
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - exercised with a blocked import in the tests
        raise ImportError("plotting needs matplotlib: pip install matplotlib "
                          "(or pip install 'captum_entropy[viz]')") from e
    return Figure


def _tex(s: str) -> str:
    return str(s).replace("$", r"\$")  # a "$" would start matplotlib's mathtext


def plot_explanation(ex: LayerExplanation, kind: str = "heatmap", sentence: int = 0, **kwargs: Any) -> Figure:
    """A matplotlib Figure (no pyplot, never shown): ``"heatmap"`` = words × features of one
    sentence, kept information per dimension (each word the mean over its pieces), colour scaled
    per row, the numbers in the cells (≤ 20 words) and the row's range in the row labels;
    ``"depth"`` = mean entropy per word per dimension against relative depth, one line per
    sentence, the mean with a 95 % bootstrap band. Keywords: ``unit`` ("nats"/"bits"); heatmap:
    ``annotate`` (bool), ``max_words`` per panel (30), ``cmap``; depth: ``seed``, ``n_resamples``."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(repr(k) for k in KINDS)}")
    figure = _figure_class()
    if kind == "heatmap":
        return _heatmap(figure, ex, _check(ex, sentence), **kwargs)
    return _depth(figure, ex, **kwargs)


def _heatmap(figure: type, ex: LayerExplanation, b: int, unit: str = "nats", annotate: bool | None = None,
             max_words: int = 30, cmap: str = "Blues") -> Figure:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    kept = ex.word_kept(b, unit)
    scaled, sat = _scaled(kept).numpy(), ex.word_saturated(b).numpy()
    conv, amb = ex.converged[:, b].tolist(), ex.ambiguous[:, b].tolist()
    half, loose = (x.numpy() for x in _error_bars(ex, b, unit))
    L, W = kept.shape
    if W == 0:
        raise ValueError(f"sentence {b} has no words to draw (only special tokens or padding)")
    words = [_tex(_short(w, 18)) for w in ex.words(b)]
    annotate = W <= 20 if annotate is None else annotate
    panels = max(1, math.ceil(W / max(1, max_words)))
    per = max(1, math.ceil(W / panels))
    rows = [_tex(_short(n, 24)) + ("" if c else " (not converged)") + (f" {AMBIGUOUS}ambiguous" if a else "")
            + f"\n{_dim(float(r.min()))}–{_dim(float(r.max()))} {unit}/dim"
            + (" (spread < 10 %)" if _narrow(r) else "")
            for n, c, a, r in zip(ex.features, conv, amb, kept)]
    fig = figure(figsize=(min(20.0, max(7.0, 3.5 + 0.5 * per)), panels * (0.5 * L + 1.6) + 1.3), layout="constrained")
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    hatch = (0.75, 0.1, 0.1, 0.7)
    for p, ax in enumerate(axes):
        cols = list(range(p * per, min(W, (p + 1) * per)))
        image = ax.imshow(scaled[:, cols].reshape(L, len(cols)), cmap=cmap, vmin=0, vmax=1, aspect="auto",
                          interpolation="nearest")
        ax.set_xticks(range(len(cols)), [words[w] for w in cols], rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(L), rows, fontsize=8)
        ax.set_ylabel("feature (shallow → deep)")
        for fi in range(L):
            if not conv[fi]:
                ax.add_patch(Rectangle((-0.5, fi - 0.5), len(cols), 1, fill=False, hatch="///", edgecolor=hatch, lw=0))
            for j, w in enumerate(cols):
                light = scaled[fi, w] < 0.6
                if sat[fi, w]:
                    ax.text(j, fi, SAT, ha="center", va="center", color="crimson", fontsize=13, fontweight="bold")
                elif annotate:
                    label = _dim(float(kept[fi, w]))
                    if math.isfinite(half[fi, w]):
                        label += "\n" + _pm(float(half[fi, w])) + (UNORDERED if loose[fi, w] else "")
                    ax.text(j, fi, label, ha="center", va="center", fontsize=7,
                            color="black" if light else "white")
        if panels > 1:
            ax.set_title(f"words {cols[0] + 1}–{cols[-1] + 1} of {W}", fontsize=9, loc="left")
    axes[-1].set_xlabel("word (sentence order)")
    bar = fig.colorbar(image, ax=list(axes), shrink=min(1.0, 2.2 / (0.5 * L + 0.6)) if panels == 1 else 0.6,
                       aspect=12, ticks=[0, 0.5, 1])
    bar.ax.set_yticklabels(["0", "0.5", "1"], fontsize=8)
    bar.set_label(SCALE_LABEL, fontsize=8)
    handles = []
    if not all(conv):
        handles.append(Patch(facecolor="white", edgecolor=hatch, hatch="///", label="not converged (approximate)"))
    if sat.any():
        handles.append(Line2D([], [], ls="none", marker="x", color="crimson", mew=2,
                              label="saturated: fully forgotten"))
    handles.append(Patch(color="none", label=f"row labels: min–max ({unit}/dim)"
                         + (f"; numbers: kept per dimension ({unit}/dim)" if annotate else "")))
    if annotate and bool(np.isfinite(half).any()):
        handles.append(Patch(color="none", label=f"±: 95 % interval from the noise draws; {UNORDERED}: not ordered "
                             "against its rank neighbour"))
    if any(amb):
        handles.append(Patch(color="none", label=f"{AMBIGUOUS}ambiguous: another optimum keeps other words"))
    wide = fig.get_size_inches()[0] >= 12
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 2) if wide else 1, fontsize=8,
               frameon=False)
    fig.suptitle(_tex(f"“{_short(_text(ex, b), 90)}”\n{_pred(ex, b)} · {ex.model}\nkept information per dimension: "
                      f"the mean of log(σ_max/σ) over the word's pieces and {ex.n_dims} dims"), fontsize=10)
    return fig


def _depth(figure: type, ex: LayerExplanation, unit: str = "nats", seed: int = 0, n_resamples: int = 2000) -> Figure:
    y = ex.mean_word_entropy(unit).numpy()  # (L, B)
    order = np.argsort(ex.depth, kind="stable")
    x, y = np.asarray(ex.depth, dtype=float)[order], y[order]
    conv = ex.converged.numpy()[order]
    fig = figure(figsize=(8.0, 5.0), layout="constrained")
    ax = fig.add_subplot()
    for b in range(y.shape[1]):
        ax.plot(x, y[:, b], color="tab:blue", lw=0.8, alpha=0.45, label="one sentence (each line)" if b == 0 else None)
    if not conv.all():
        li, bi = np.nonzero(~conv)
        ax.scatter(x[li], y[li, bi], s=36, facecolors="none", edgecolors="crimson", lw=1.2, zorder=3,
                   label="not converged")
    with warnings.catch_warnings():  # a feature whose every sentence has no words: NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(np.where(np.isfinite(y), y, np.nan), 1)
    band = np.array([_bootstrap(row, n_resamples, seed) for row in y]).reshape(len(x), 2)
    if np.isfinite(band).any():
        ax.fill_between(x, band[:, 0], band[:, 1], color="black", alpha=0.15, lw=0,
                        label="95 % bootstrap interval of the mean")
    ax.plot(x, mean, color="black", lw=2.6, marker="o", label=f"mean over {y.shape[1]} sentences")
    ax.set_xticks(x, [_tex(_short(ex.features[i], 16)) for i in order], rotation=45 if len(x) > 6 else 0,
                  ha="right" if len(x) > 6 else "center")
    ax.set_xlabel("relative depth (layer l of N at l/N; the prediction at 1.25)")
    ax.set_ylabel(f"mean entropy per word per dimension ({unit}/dim)\nlow = kept")
    ax.set_title(_tex(f"{ex.model}: how much of a word each feature forgets"), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return fig


# -- ModelComparison ---------------------------------------------------------------------------

def plot_comparison(cmp: ModelComparison, kind: str = "depth", sentence: int = 0, **kwargs: Any) -> Figure:
    """A matplotlib Figure (no pyplot, never shown) of a :class:`~captum_entropy.comparison.ModelComparison`:
    ``"depth"`` = corpus entropy per dimension against relative depth, one line per model (each at
    its own depths; the prediction at 1.25) with a 95 % bootstrap band over sentences;
    ``"words"`` = one sentence's word units × models, each cell the unit's share (%) of the kept
    information per dimension (``ModelComparison.share``) at the model's output feature
    (``feature=`` another one), grey where a model has no word (it truncated the sentence).
    Keywords: depth: ``seed``, ``n_resamples``; words: ``feature``, ``annotate`` (bool),
    ``max_units`` per panel (30), ``cmap``."""
    if kind not in COMPARISON_KINDS:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(repr(k) for k in COMPARISON_KINDS)}")
    figure = _figure_class()
    if kind == "words":
        return _cmp_words(figure, cmp, _check(cmp, sentence, "comparison"), **kwargs)
    return _cmp_depth(figure, cmp, **kwargs)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _cmp_depth(figure: type, cmp: ModelComparison, seed: int = 0, n_resamples: int = 2000) -> Figure:
    from matplotlib.lines import Line2D


    fig = figure(figsize=(8.5, 5.2), layout="constrained")
    ax = fig.add_subplot()
    colours = [f"C{m % 10}" for m in range(len(cmp.models))]
    corpus, per_sentence, n_b = cmp.corpus_entropy(), cmp.mean_word_entropy, len(cmp)
    any_nc = any_band = False
    for m, name in enumerate(cmp.models):
        order = _depth_order(cmp.depth[m])
        x = np.asarray(cmp.depth[m], dtype=float)[order]
        y = corpus[m].numpy()[order]
        rows = per_sentence[m].numpy()[order]
        band = np.array([_bootstrap(r, n_resamples, seed) for r in rows]).reshape(len(x), 2)
        c, marker = colours[m], _MARKERS[m % len(_MARKERS)]
        if np.isfinite(band).any():
            any_band = True
            if len(x) > 1:
                ax.fill_between(x, band[:, 0], band[:, 1], color=c, alpha=0.15, lw=0)
            else:
                ax.errorbar(x, y, yerr=np.abs(band.T - y), color=c, capsize=4, lw=1, ls="none")
        ax.plot(x, y, color=c, lw=2.2, marker=marker, ms=7, label=_tex(_short(f"{name} ({len(x)} feature{'s' if len(x) != 1 else ''})", 40)))
        nc = ~cmp.converged[m].numpy()[order].all(1)
        if nc.any():
            any_nc = True
            ax.scatter(x[nc], y[nc], s=170, facecolors="none", edgecolors="crimson", lw=1.6, zorder=4)
    ticks = [0.0, 0.25, 0.5, 0.75, 1.0, OUTPUT_DEPTH]
    ax.set_xticks(ticks, ["0", "0.25", "0.5", "0.75", "1\n(last layer)", "output"])
    ax.axvline((1.0 + OUTPUT_DEPTH) / 2, color="grey", lw=0.8, ls=":")
    ax.set_xlim(-0.03, OUTPUT_DEPTH + 0.08)
    ax.set_xlabel("relative depth (layer l of N at l/N; the prediction at 1.25)")
    ax.set_ylabel("corpus entropy per dimension (nats/dim)\nlow = kept")
    ax.set_title(f"entropy against relative depth: {len(cmp.models)} models, {n_b} sentence{'s' if n_b != 1 else ''}"
                 " (mean word entropy per dimension)", fontsize=10)
    ax.grid(alpha=0.3)
    handles, _ = ax.get_legend_handles_labels()
    from matplotlib.patches import Patch

    if any_band:
        handles.append(Patch(color="grey", alpha=0.3, label="95 % bootstrap interval over sentences"))
    if any_nc:
        handles.append(Line2D([], [], ls="none", marker="o", ms=11, mfc="none", mec="crimson", mew=1.6,
                              label="not converged in some sentence"))
    ax.legend(handles=handles, fontsize=8, loc="best")
    return fig


def _cmp_words(figure: type, cmp: ModelComparison, b: int, feature: str | None = None, annotate: bool | None = None,
               max_units: int = 30, cmap: str = "Blues") -> Figure:
    import matplotlib
    from matplotlib.patches import Patch, Rectangle

    n_m, units = len(cmp.models), [_tex(_short(u, 18)) for u in cmp.units[b]]
    U = len(units)
    if U == 0:
        raise ValueError(f"sentence {b} has no word units to draw")
    fis = [cmp.feature_index(m, feature) for m in range(n_m)]
    share = np.stack([cmp.share[m][fis[m], b, :U].numpy() * 100 for m in range(n_m)])  # (M, U), NaN: no word
    conv = [bool(cmp.converged[m][fis[m], b]) for m in range(n_m)]
    top = float(np.nanmax(share)) if np.isfinite(share).any() else 1.0
    top = top if top > 0 else 1.0
    colours = matplotlib.colormaps[cmap].with_extremes(bad=GREY)
    annotate = U <= 20 if annotate is None else annotate
    panels = max(1, math.ceil(U / max(1, max_units)))
    per = max(1, math.ceil(U / panels))
    rows = [_tex(_short(name, 24)) + ("" if conv[m] else " (not converged)")
            + "\n" + _tex(f"{_short(cmp.features[m][fis[m]], 14, True)} · {_short(_cmp_pred(cmp, m, b), 26)}")
            for m, name in enumerate(cmp.models)]
    fig = figure(figsize=(min(20.0, max(7.5, 4.0 + 0.55 * per)), panels * (0.55 * n_m + 1.6) + 1.4),
                 layout="constrained")
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    hatch = (0.75, 0.1, 0.1, 0.7)
    for p, ax in enumerate(axes):
        cols = list(range(p * per, min(U, (p + 1) * per)))
        data = np.ma.masked_invalid(share[:, cols].reshape(n_m, len(cols)))
        image = ax.imshow(data, cmap=colours, vmin=0, vmax=top, aspect="auto", interpolation="nearest")
        ax.set_xticks(range(len(cols)), [units[u] for u in cols], rotation=45, ha="right", rotation_mode="anchor")
        ax.set_yticks(range(n_m), rows, fontsize=8)
        ax.set_ylabel("model")
        for m in range(n_m):
            for j, u in enumerate(cols):
                v = share[m, u]
                if not conv[m] and np.isfinite(v):  # the grey "no word" cells stay plain
                    ax.add_patch(Rectangle((j - 0.5, m - 0.5), 1, 1, fill=False, hatch="///", edgecolor=hatch, lw=0))
                if not np.isfinite(v):
                    ax.text(j, m, NONE, ha="center", va="center", fontsize=9, color="#555555")
                elif annotate:
                    ax.text(j, m, f"{v:.1f}", ha="center", va="center", fontsize=7,
                            color="black" if v / top < 0.6 else "white")
        if panels > 1:
            ax.set_title(f"units {cols[0] + 1}–{cols[-1] + 1} of {U}", fontsize=9, loc="left")
    axes[-1].set_xlabel("word unit (sentence order; aligned across the models' tokenizers)")
    bar = fig.colorbar(image, ax=list(axes), shrink=min(1.0, 2.4 / (0.55 * n_m + 0.6)) if panels == 1 else 0.6,
                       aspect=12)
    bar.ax.tick_params(labelsize=8)
    bar.set_label(SHARE_LABEL, fontsize=8)
    handles = []
    if not all(conv):
        handles.append(Patch(facecolor="white", edgecolor=hatch, hatch="///", label="not converged (approximate)"))
    if not np.isfinite(share).all():
        handles.append(Patch(facecolor=GREY, edgecolor="#888888", label=f"{NONE} grey: {MISSING_LABEL}"))
    handles.append(Patch(color="none", label="a row sums to 100 % over its units" + ("; numbers: share (%)" if annotate
                                                                                  else "")))
    wide = fig.get_size_inches()[0] >= 12
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles) if wide else 1, fontsize=8,
               frameon=False)
    at = feature or (OUTPUT if all(cmp.features[m][fi] == OUTPUT for m, fi in enumerate(fis))
                     else "output (its last layer without one)")
    fig.suptitle(_tex(f"“{_short(_cmp_text(cmp, b), 90)}”\nshare of the sentence's kept information per "
                      f"dimension per word unit at each model's {at}"), fontsize=10)
    return fig
