"""The plain-text tables (``LayerExplanation.show``, the ``layers`` command's depth table,
``ModelComparison.show``) and the rows for Captum's ``visualize_text``."""

from __future__ import annotations

import math
import textwrap
import warnings
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from .._names import OUTPUT
from . import _common
from ..readings import kept_meaning
from ._common import (AMBIGUOUS, NC, NONE, SAT, UNORDERED, _bootstrap, _check, _class_name, _cmp_pred, _cmp_text,
                      _depth_order, _dim, _e, _error_bars, _pm, _pred, _short, _text)

MEAN_ROW = "mean word"  # the last row of a sentence's table: the mean over its words

if TYPE_CHECKING:
    from ..analysis import LayerExplanation
    from ..comparison import ModelComparison


def explanation_table(ex: LayerExplanation, sentences: Sequence[int] | None = None, unit: str = "nats",
                      width: int = 100) -> str:
    """Words × features of each sentence as text: kept information per dimension in ``unit``/dim
    (:meth:`~captum_entropy.readings.WordReadings.word_kept`; high = kept), the sentence's mean
    word under the words, ``~`` = feature not converged, ``0×`` = saturated (fully forgotten);
    specials listed last."""
    idx = range(len(ex)) if sentences is None else [_check(ex, b) for b in sentences]
    return "\n\n".join(_table(ex, b, unit, width) for b in idx)


def _table(ex: LayerExplanation, b: int, unit: str, width: int) -> str:
    g, conv, amb = ex.groupings[b], ex.converged[:, b].tolist(), ex.ambiguous[:, b].tolist()
    kept, sat = ex.word_kept(b, unit), ex.word_saturated(b)
    half, loose = _error_bars(ex, b, unit)
    bars = bool(torch.isfinite(half).any())  # error bars measured: wider cells and their footnote
    sp_kept, sp_sat = ex.special_kept(b, unit), ex.saturated[:, b, list(g.specials)]
    head = textwrap.wrap(f'[{b}] "{_text(ex, b)}"', width, subsequent_indent="    ")
    head += textwrap.wrap(f"{_pred(ex, b)} | model: {ex.model} | {kept_meaning(ex.n_dims, unit)}", width,
                          initial_indent="    ", subsequent_indent="    ")
    words = [_short(w, 18) for w in g.words]
    specials = [_short(s, 18) for s in g.special_names()]
    lw = max([len(x) for x in words + specials + [MEAN_ROW]] + [8])
    cw = max(15 if bars else 10, min(13, max(len(n) for n in ex.features) + 4))
    per = max(1, (width - lw - 1) // cw)
    per = math.ceil(len(ex.features) / math.ceil(len(ex.features) / per))  # blocks of equal size

    def cell(v: float, fi: int, saturated: bool, h: float = math.nan, undetermined: bool = False) -> str:
        num = "0" if saturated else _dim(v)
        if math.isfinite(h) and not saturated:
            num += _pm(h)
        marks = (SAT if saturated else "") + (UNORDERED if undetermined else "") + ("" if conv[fi] else NC)
        return f"{num:>{cw - 3}}{marks:<3}"

    def head_mark(fi: int) -> str:
        return ("" if conv[fi] else NC) + (AMBIGUOUS if amb[fi] else "")

    out = head
    for start in range(0, len(ex.features), per):
        cols = range(start, min(start + per, len(ex.features)))
        if per < len(ex.features):
            out.append(f"    features {cols[0] + 1}-{cols[-1] + 1} of {len(ex.features)}:" if len(cols) > 1
                       else f"    feature {cols[0] + 1} of {len(ex.features)}:")
        header = "".join(f"{_short(ex.features[fi], cw - 4, True):>{cw - 3}}{head_mark(fi):<3}" for fi in cols)
        out += [f"{'word':<{lw}} {header}".rstrip(), "-" * (lw + 1 + cw * len(cols))]
        for w, name in enumerate(words):
            out.append(f"{name:<{lw}} " + "".join(cell(float(kept[fi, w]), fi, bool(sat[fi, w]), float(half[fi, w]),
                                                       bool(loose[fi, w])) for fi in cols))
        out.append(f"{MEAN_ROW:<{lw}} " + "".join(cell(float(kept[fi].mean()), fi, False) for fi in cols))
        if specials:
            out.append(f"specials (not words; not in the {MEAN_ROW}):")
            for s, name in enumerate(specials):
                out.append(f"{name:<{lw}} "
                           + "".join(cell(float(sp_kept[fi, s]), fi, bool(sp_sat[fi, s])) for fi in cols))
    if bars:
        out += textwrap.wrap(f"±: half-width of the 95 % interval from the noise draws; {UNORDERED} not ordered: the "
                             "interval overlaps that of the word ranked next to it", width)
    if any(amb):
        gaps = ", ".join(f"{n} (gap {_dim(float(ex.ambiguity_gap[fi, b]))} nats/dim)"
                         for fi, n in enumerate(ex.features) if amb[fi])
        out += textwrap.wrap(f"{AMBIGUOUS} ambiguous: another optimum within the gap keeps other words: {gaps}", width)
    if not all(conv):
        bad = ", ".join(n for n, c in zip(ex.features, conv) if not c)
        out += textwrap.wrap(f"{NC} not converged: {bad} (the optimiser's stationarity test did not pass; "
                             "numbers approximate)", width)
    if bool(sat.any()) or bool(sp_sat.any()):
        out.append(f"0{SAT} saturated: fully forgotten (every token of the word at the σ cap)")
    return "\n".join(line.rstrip() for line in out)


def _nanmean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    with warnings.catch_warnings():  # a feature with no finite value: NaN, no warning
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmean(np.where(np.isfinite(values), values, np.nan), axis)


def _interval(row: np.ndarray, n_resamples: int, seed: int) -> str:
    lo, hi = _bootstrap(row, n_resamples, seed)
    return "n/a" if math.isnan(lo) else f"[{_dim(lo)}, {_dim(hi)}]"


def depth_table(ex: LayerExplanation, unit: str = "nats", *, seed: int = 0, n_resamples: int = 2000,
                width: int = 100) -> str:
    """Per feature (rows: shallow -> deep, then the output): relative depth, the corpus mean word
    entropy per dimension (:meth:`~captum_entropy.analysis.LayerExplanation.mean_word_entropy`,
    the mean over sentences) with a 95 % bootstrap interval over sentences (seeded), the mean word's
    kept information per dimension, and in how many of the B sentences the feature converged."""
    entropy = ex.mean_word_entropy(unit).numpy()  # (L, B)
    kept = ex.mean_word_kept(unit).numpy() if len(ex) else np.zeros((len(ex.features), 0))
    conv = ex.converged.sum(1).tolist()
    n_b = len(ex)
    out = textwrap.wrap(f"{ex.model}: entropy against depth over {n_b} sentence{'s' if n_b != 1 else ''} "
                        "(low entropy = kept)", width)
    out += textwrap.wrap(f"entropy: mean word entropy H(X_word|s) per dimension ({ex.n_dims} dims; each word the "
                         f"mean over its pieces), {unit}/dim, mean over the sentences, with a 95 % bootstrap interval "
                         f"over sentences; kept: the mean word's kept information per dimension, {unit}/dim (log "
                         "σ_max/σ; high = kept)", width, initial_indent="    ", subsequent_indent="    ")
    names = [_short(n, 24, True) + ("" if conv[fi] == n_b else NC) for fi, n in enumerate(ex.features)]
    lw = max([len(n) for n in names] + [len("feature")])
    head = (f"{'feature':<{lw}} {'depth':>6}  {f'entropy ({unit}/dim)':>18}  {'95 % interval':>16}  "
            f"{f'kept ({unit}/dim)':>16}  {'converged':>9}")
    out += [head, "-" * len(head)]
    mean_e, mean_k = _nanmean(entropy), _nanmean(kept)
    for fi in _depth_order(ex.depth):
        out.append(f"{names[fi]:<{lw}} {ex.depth[fi]:>6.2f}  {_dim(float(mean_e[fi])):>18}  "
                   f"{_interval(entropy[fi], n_resamples, seed):>16}  {_dim(float(mean_k[fi])):>16}  "
                   f"{f'{conv[fi]}/{n_b}':>9}")
    if any(c < n_b for c in conv):
        out += textwrap.wrap(f"{NC} not converged in some sentences (converged < {n_b}): the optimiser's "
                             "stationarity test did not pass there; numbers approximate", width)
    if n_b < _common.MIN_BOOTSTRAP:
        out.append(f"n/a: an interval needs at least {_common.MIN_BOOTSTRAP} sentences")
    return "\n".join(line.rstrip() for line in out)


def comparison_table(cmp: ModelComparison, width: int = 100, *, seed: int = 0, n_resamples: int = 2000) -> str:
    """Several models on the same sentences as text: (1) per model and feature, the corpus entropy
    per dimension against relative depth (95 % bootstrap interval over sentences); (2) per
    sentence, the aligned word units × models, each cell the unit's share (%) of the kept
    information of the sentence's words at the model's output feature (its last layer without
    one), and each model's prediction. ``~`` = not converged, ``—`` = the model has no word there."""
    out = _corpus_block(cmp, width, seed, n_resamples)
    for b in range(len(cmp)):
        out += [""] + _share_block(cmp, b, width)
    return "\n".join(line.rstrip() for line in out)


def _corpus_block(cmp: ModelComparison, width: int, seed: int, n_resamples: int) -> list[str]:
    n_b, corpus, per_sentence = len(cmp), cmp.corpus_entropy(), cmp.mean_word_entropy
    out = textwrap.wrap(f"{len(cmp.models)} models, {n_b} sentence{'s' if n_b != 1 else ''}: corpus entropy per "
                        "dimension against relative depth (low entropy = kept)", width)
    out += textwrap.wrap("entropy: mean over a sentence's words (each model's own; each word the mean over its "
                         "pieces) of H(X_word|s) per embedding dimension, then over the sentences, in nats/dim, with "
                         "a 95 % bootstrap interval over sentences; depth: layer l of N at l/N, the prediction at "
                         "1.25", width, initial_indent="    ", subsequent_indent="    ")
    models = [_short(m, 20) for m in cmp.models]
    names = [[_short(n, 22, True) + ("" if int(c.sum()) == n_b else NC)
              for n, c in zip(cmp.features[m], cmp.converged[m])] for m in range(len(cmp.models))]
    mw = max([len(m) for m in models] + [len("model")])
    fw = max([len(n) for ns in names for n in ns] + [len("feature")])
    head = (f"{'model':<{mw}} {'feature':<{fw}} {'depth':>6}  {'entropy (nats/dim)':>18}  {'95 % interval':>16}  "
            f"{'converged':>9}")
    out += [head, "-" * len(head)]
    any_nc = False
    for m in range(len(cmp.models)):
        conv = cmp.converged[m].sum(1).tolist()
        any_nc |= any(c < n_b for c in conv)
        rows = per_sentence[m].numpy()
        for k, fi in enumerate(_depth_order(cmp.depth[m])):
            out.append(f"{models[m] if k == 0 else '':<{mw}} {names[m][fi]:<{fw}} {cmp.depth[m][fi]:>6.2f}  "
                       f"{_dim(float(corpus[m][fi])):>18}  {_interval(rows[fi], n_resamples, seed):>16}  "
                       f"{f'{conv[fi]}/{n_b}':>9}")
    if any_nc:
        out += textwrap.wrap(f"{NC} not converged in some sentences (converged < {n_b}): the optimiser's "
                             "stationarity test did not pass there; numbers approximate", width)
    if n_b < _common.MIN_BOOTSTRAP:
        out.append(f"n/a: an interval needs at least {_common.MIN_BOOTSTRAP} sentences")
    return out


def _share_block(cmp: ModelComparison, b: int, width: int) -> list[str]:
    n_m = len(cmp.models)
    units = [_short(u, 18) for u in cmp.units[b]]
    fis = [cmp.feature_index(m) for m in range(n_m)]
    conv = [bool(cmp.converged[m][fis[m], b]) for m in range(n_m)]
    share = [(cmp.share[m][fis[m], b, : len(units)] * 100).tolist() for m in range(n_m)]
    out = textwrap.wrap(f'[{b}] "{_cmp_text(cmp, b)}"', width, subsequent_indent="    ")
    preds = [f"{cmp.models[m]}: {_cmp_pred(cmp, m, b)}" for m in range(n_m)]
    one_line = "    predicted: " + " · ".join(preds)
    out += [one_line] if len(one_line) <= width else [
        line for p in preds for line in textwrap.wrap(f"predicted by {p}", width, initial_indent="    ",
                                                      subsequent_indent="        ")]
    features = [cmp.features[m][fis[m]] for m in range(n_m)]
    at = OUTPUT if all(f == OUTPUT for f in features) else f"{OUTPUT} (or last layer)"
    out += textwrap.wrap(f"share (%) of the kept information per dimension of the sentence's word units, at each "
                         f"model's {at} feature (a unit: the mean of the model's words in it, each the mean over its "
                         "pieces); each column sums to 100 over the units it has (high = kept)", width,
                         initial_indent="    ", subsequent_indent="    ")
    lw = max([len(u) for u in units] + [len("unit"), len("(feature)")])
    cw = [max(9, min(20, max(len(m), len(f) if at != OUTPUT else 0) + 3)) for m, f in zip(cmp.models, features)]
    blocks: list[list[int]] = [[]]  # models side by side while they fit in ``width``
    for m in range(n_m):
        if blocks[-1] and lw + 1 + sum(cw[k] for k in blocks[-1]) + cw[m] > width:
            blocks.append([])
        blocks[-1].append(m)
    missing = False
    for cols in blocks:
        if len(blocks) > 1:
            out.append(f"    models {cols[0] + 1}-{cols[-1] + 1} of {n_m}:" if len(cols) > 1
                       else f"    model {cols[0] + 1} of {n_m}:")
        header = "".join(f"{_short(cmp.models[m], cw[m] - 3):>{cw[m] - 2}}{'' if conv[m] else NC:<2}" for m in cols)
        out.append(f"{'unit':<{lw}} {header}")
        if at != OUTPUT:
            out.append(f"{'(feature)':<{lw}} "
                       + "".join(f"{_short(features[m], cw[m] - 3, True):>{cw[m] - 2}}  " for m in cols))
        out.append("-" * (lw + 1 + sum(cw[m] for m in cols)))
        for u, name in enumerate(units):
            cells = []
            for m in cols:
                v = share[m][u]
                missing |= not math.isfinite(v)
                cells.append(f"{NONE:>{cw[m] - 2}}  " if not math.isfinite(v)
                             else f"{v:>{cw[m] - 2}.1f}{'' if conv[m] else NC:<2}")
            out.append(f"{name:<{lw}} " + "".join(cells))
    if not all(conv):
        bad = ", ".join(f"{cmp.models[m]} at {features[m]}" for m in range(n_m) if not conv[m])
        out += textwrap.wrap(f"{NC} not converged: {bad} (the optimiser's stationarity test did not pass; "
                             "numbers approximate)", width)
    if missing:
        out += textwrap.wrap(f"{NONE} the model has no word in this unit: it truncated the sentence (shares are over "
                             "its own words)", width)
    return out


def visualize_text_records(ex: LayerExplanation, b: int, feature: str, others: Mapping[str, Tensor],
                           true_label: Any) -> list:
    """Rows for ``captum.attr.visualization.visualize_text``: ours (kept information per
    dimension at ``feature``, each word the mean over its pieces, scaled to [0, 1] by the row
    max), then each of ``others`` (name -> (T,) token attributions) summed over each word's
    pieces (additive attributions add) and scaled to [-1, 1] by its max |value|. Strings are
    HTML-escaped, because ``visualize_text`` pastes them into its HTML as they are."""
    from captum.attr import visualization

    b = _check(ex, b)
    g, fi = ex.groupings[b], ex._layer_index(feature)
    c = int(ex.prediction[b])
    true_label = true_label.item() if isinstance(true_label, Tensor) else true_label
    true = "n/a" if true_label is None else _class_name(ex, int(true_label)) if isinstance(
        true_label, (int, np.integer)) and ex.label_names else str(true_label)
    pred, true, words = _e(_class_name(ex, c) if c >= 0 else "n/a"), _e(true), [_e(w) for w in g.words]

    def record(values: Tensor, scale: float, name: str, conv: Any, labels: list[str] = words) -> Any:
        return visualization.VisualizationDataRecord(
            values / scale if scale > 0 else torch.zeros_like(values), float(ex.probability[b]), pred, true,
            _e(name), float(values.sum()), labels, conv)

    kept = ex.word_kept(b)[fi].detach().float().cpu()
    # our row's words carry their value and 95 % interval as a tooltip (visualize_text pastes words as HTML)
    half, loose = (x[fi].tolist() for x in _error_bars(ex, b))
    tips = [f"kept {float(v):.3f} nats/dim" + (f", 95 % interval {float(v) - h:.3f} to {float(v) + h:.3f}"
                                              + ("; not ordered against its rank neighbour" if u else "")
                                              if math.isfinite(h) else "")
            for v, h, u in zip(kept, half, loose)]
    tipped = [f'<span title="{_e(t)}">{w}</span>' for w, t in zip(words, tips)]
    rows = [record(kept, float(kept.max()) if kept.numel() else 0.0, f"kept per dim ({feature})",
                   float(ex.stationarity[fi, b]), tipped)]
    T = len(g.tokens)
    for name, attr in others.items():
        a = torch.as_tensor(attr).detach().float().cpu()
        if a.shape != (T,):
            raise ValueError(f"others[{name!r}] has shape {tuple(a.shape)}; it needs ({T},), one attribution per "
                             f"token position of sentence {b} (sum over the embedding dimension first, e.g. "
                             "attr.sum(-1)[b])")
        w = g.aggregate(torch.nan_to_num(a))
        rows.append(record(w, float(w.abs().max()) if w.numel() else 0.0, str(name), None))
    return rows
