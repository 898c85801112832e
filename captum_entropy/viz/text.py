"""The plain-text table (``LayerExplanation.show``) and the rows for Captum's ``visualize_text``."""

from __future__ import annotations

import math
import textwrap
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from ._common import NC, SAT, _check, _class_name, _e, _fmt, _pred, _short, _text

if TYPE_CHECKING:
    from ..analysis import LayerExplanation


def explanation_table(ex: LayerExplanation, sentences: Sequence[int] | None = None, unit: str = "nats",
                      width: int = 100) -> str:
    """Words × features of each sentence as text: kept information in ``unit`` (high = kept),
    ``~`` = feature not converged, ``0×`` = saturated (fully forgotten); specials listed last."""
    idx = range(len(ex)) if sentences is None else [_check(ex, b) for b in sentences]
    return "\n\n".join(_table(ex, b, unit, width) for b in idx)


def _table(ex: LayerExplanation, b: int, unit: str, width: int) -> str:
    g, conv = ex.groupings[b], ex.converged[:, b].tolist()
    kept, sat = ex.word_kept(b, unit), ex.word_saturated(b)
    sp_kept, sp_sat = ex.special_kept(b, unit), ex.saturated[:, b, list(g.specials)]
    head = textwrap.wrap(f'[{b}] "{_text(ex, b)}"', width, subsequent_indent="    ")
    head += textwrap.wrap(f"{_pred(ex, b)} | model: {ex.model} | kept information per word in {unit} "
                          f"(log σ_max/σ summed over the word's tokens, {ex.n_dims} dims each; high = kept, "
                          "0 = forgotten)", width, initial_indent="    ", subsequent_indent="    ")
    words = [_short(w, 18) for w in g.words]
    specials = [_short(s, 18) for s in g.special_names()]
    lw = max([len(x) for x in words + specials + ["Σ words"]] + [8])
    cw = max(9, min(12, max(len(n) for n in ex.layers) + 3))
    per = max(1, (width - lw - 1) // cw)
    per = math.ceil(len(ex.layers) / math.ceil(len(ex.layers) / per))  # blocks of equal size

    def cell(v: float, fi: int, saturated: bool) -> str:
        num = "0" if saturated else _fmt(v)
        return f"{num:>{cw - 2}}{(SAT if saturated else '') + ('' if conv[fi] else NC):<2}"

    out = head
    for start in range(0, len(ex.layers), per):
        cols = range(start, min(start + per, len(ex.layers)))
        if per < len(ex.layers):
            out.append(f"    features {cols[0] + 1}-{cols[-1] + 1} of {len(ex.layers)}:" if len(cols) > 1
                       else f"    feature {cols[0] + 1} of {len(ex.layers)}:")
        header = "".join(f"{_short(ex.layers[fi], cw - 3, True):>{cw - 2}}{'' if conv[fi] else NC:<2}" for fi in cols)
        out += [f"{'word':<{lw}} {header}".rstrip(), "-" * (lw + 1 + cw * len(cols))]
        for w, name in enumerate(words):
            out.append(f"{name:<{lw}} " + "".join(cell(float(kept[fi, w]), fi, bool(sat[fi, w])) for fi in cols))
        out.append(f"{'Σ words':<{lw}} " + "".join(cell(float(kept[fi].sum()), fi, False) for fi in cols))
        if specials:
            out.append("specials (not words; not in Σ words):")
            for s, name in enumerate(specials):
                out.append(f"{name:<{lw}} "
                           + "".join(cell(float(sp_kept[fi, s]), fi, bool(sp_sat[fi, s])) for fi in cols))
    if not all(conv):
        bad = ", ".join(n for n, c in zip(ex.layers, conv) if not c)
        out += textwrap.wrap(f"{NC} not converged: {bad} (the optimiser's stationarity test did not pass; "
                             "numbers approximate)", width)
    if bool(sat.any()) or bool(sp_sat.any()):
        out.append(f"0{SAT} saturated: fully forgotten (every token of the word at the σ cap)")
    return "\n".join(line.rstrip() for line in out)


def visualize_text_records(ex: LayerExplanation, b: int, feature: str, others: Mapping[str, Tensor],
                           true_label: Any) -> list:
    """Rows for ``captum.attr.visualization.visualize_text``: ours (kept information at
    ``feature``, scaled to [0, 1] by the row max), then each of ``others`` (name -> (T,) token
    attributions) summed into the same words and scaled to [-1, 1] by its max |value|. Strings
    are HTML-escaped, because ``visualize_text`` pastes them into its HTML as they are."""
    from captum.attr import visualization

    b = _check(ex, b)
    g, fi = ex.groupings[b], ex._layer_index(feature)
    c = int(ex.prediction[b])
    true_label = true_label.item() if isinstance(true_label, Tensor) else true_label
    true = "n/a" if true_label is None else _class_name(ex, int(true_label)) if isinstance(
        true_label, (int, np.integer)) and ex.label_names else str(true_label)
    pred, true, words = _e(_class_name(ex, c) if c >= 0 else "n/a"), _e(true), [_e(w) for w in g.words]

    def record(values: Tensor, scale: float, name: str, conv: Any) -> Any:
        return visualization.VisualizationDataRecord(
            values / scale if scale > 0 else torch.zeros_like(values), float(ex.probability[b]), pred, true,
            _e(name), float(values.sum()), words, conv)

    kept = ex.word_kept(b)[fi].detach().float().cpu()
    rows = [record(kept, float(kept.max()) if kept.numel() else 0.0, f"kept information ({feature})",
                   float(ex.stationarity[fi, b]))]
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
