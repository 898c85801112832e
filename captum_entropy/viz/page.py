"""One standalone HTML page: inline CSS, no script, no external resource; every string escaped."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .._names import OUTPUT
from ..readings import relative
from ._common import (AMBIGUOUS, NC, NONE, RGB, SAT, UNORDERED, _bootstrap, _check, _cmp_pred, _cmp_text, _colour,
                      _depth_order, _dim, _e, _error_bars, _narrow, _pm, _pred, _scaled, _short, _text)

if TYPE_CHECKING:
    from ..analysis import LayerExplanation
    from ..comparison import ModelComparison


_CSS = """
.ce-root{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1d2330;
 max-width:1180px;margin:0 auto;padding:0 12px;overflow-wrap:anywhere}
.ce-root h1{font-size:20px;margin:14px 0 8px}.ce-root h2{font-size:15px;font-weight:600;margin:22px 0 2px}
.ce-legend{border:1px solid #d6dbe4;border-radius:6px;padding:8px 12px;background:#fafbfd}
.ce-legend p{margin:4px 0}.ce-legend ul{margin:4px 0;padding-left:18px}
.ce-bar{display:inline-block;width:220px;height:14px;vertical-align:middle;border:1px solid #9aa;
 background:linear-gradient(to right,rgb(%s),rgb(%s),rgb(%s))}
.ce-pred{margin:0 0 6px;color:#44516a}.ce-scroll{overflow-x:auto;max-width:100%%}
.ce-grid{border-collapse:separate;border-spacing:2px;margin:4px 0 8px}
.ce-grid th{text-align:left;font-weight:600;font-size:12px;padding:2px 8px 2px 0;max-width:11em;white-space:normal}
.ce-grid tbody th[scope=row]{min-width:7em}
.ce-grid td{padding:2px 5px;border:2px solid transparent;border-radius:3px;white-space:nowrap}
.ce-ncl{display:block;color:#b03a2e;font-weight:400}
.ce-narrow{display:block;color:#5a6270;font-weight:400}
tr.ce-nc td.ce-w,.ce-ncx{border:2px dashed #b03a2e !important}
.ce-sat{text-decoration:line-through;text-decoration-color:#c0392b;text-decoration-thickness:2px}
.ce-satm{color:#c0392b;font-weight:700;padding-left:2px}
td.ce-sp,.ce-sp{background:#e9ebef;color:#7a808c;font-style:italic}td.ce-gap{padding:0 4px}
.ce-grid thead th{font-weight:500;text-align:center;padding:2px 5px;white-space:nowrap;max-width:none}
.ce-grid td.ce-v{text-align:center;font-variant-numeric:tabular-nums;min-width:2.6em}
td.ce-none,.ce-none{background:#c4c4c4;color:#3d434d;text-align:center;font-style:normal}
.ce-num{display:block;font-size:11px;font-variant-numeric:tabular-nums;text-align:center}
.ce-nw{white-space:nowrap}.ce-feat{display:block;font-weight:400;color:#5b6578;font-size:11px}
.ce-depth td,.ce-depth th{padding:2px 8px}.ce-depth thead th{text-align:right}
.ce-depth thead th.ce-l{text-align:left}.ce-depth td.ce-v{text-align:right}
.ce-depth tbody th{vertical-align:middle;max-width:16em}.ce-depth tbody th[scope=rowgroup]{vertical-align:top}
.ce-depth tr.ce-first>*{border-top:1px solid #c9d0dc}
""" % tuple(",".join(map(str, c)) for c in RGB)


def explanation_html(ex: LayerExplanation, title: str | None = None, unit: str = "nats",
                     sentences: Sequence[int] | None = None, full_page: bool = True) -> str:
    """One standalone UTF-8 HTML page (inline CSS, no script, no external resource): a legend,
    then per sentence a table rows = features, cells = words with their kept information per
    dimension, coloured on the row's scale; hover a word for the rest (against the sentence's mean
    word, pieces, total, entropy). ``full_page=False``: a fragment."""
    title = title if title is not None else f"{ex.model}: what each feature keeps of each word"
    idx = range(len(ex)) if sentences is None else [_check(ex, b) for b in sentences]
    body = [f'<div class="ce-root"><h1>{_e(title)}</h1>', _legend(ex, unit)]
    body += [_section(ex, b, unit) for b in idx]
    body.append("</div>")
    return _page(title, body, full_page)


def _page(title: str, body: list[str], full_page: bool) -> str:
    if not full_page:
        return f"<style>{_CSS}</style>" + "\n".join(body)
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
            f"<title>{_e(title)}</title><style>{_CSS}</style></head>\n<body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def _legend(ex: LayerExplanation, unit: str) -> str:
    return (
        '<div class="ce-legend"><p><span>0 = row min</span> <span class="ce-bar"></span> '
        "<span>1 = row max</span></p>"
        f"<p>Number and colour = <b>kept information per dimension</b> ({_e(unit)}/dim): the mean over the "
        f"word's pieces and their {ex.n_dims} dimensions of log(σ<sub>max</sub>/σ); high = kept, 0 = forgotten; a "
        "word the tokenizer cut into pieces reads like one piece with the same σ. Colours are <b>scaled per "
        "row</b> (each feature: lightest = its least kept word, darkest = its most kept word; a row whose words "
        "differ by less than 10 % of its largest value stays pale): <b>darker = more kept</b>. The row label gives "
        "the sentence's mean word. Hover a word for its value against that mean, its pieces, its total over "
        f"pieces ({_e(unit)}) and its entropy H(X|s) (low = kept).</p><ul>"
        f'<li><span class="ce-ncx">&nbsp;word&nbsp;</span> {NC} not converged: dashed border; the optimiser\'s '
        "stationarity test did not pass, the numbers are approximate</li>"
        f'<li><span class="ce-sat">word</span><span class="ce-satm">{SAT}</span> saturated: fully forgotten '
        "(every token at the σ cap)</li>"
        f"<li>±: half-width of the 95 % interval of the number from the noise draws (where measured); "
        f"{UNORDERED}: not ordered, the interval overlaps that of the word ranked next to it</li>"
        f"<li>{AMBIGUOUS} ambiguous (in the row label): another optimum within the gap keeps other words</li>"
        '<li><span class="ce-sp">&nbsp;[CLS]&nbsp;</span> special tokens, grey: not words, not coloured</li></ul></div>'
    )


def _pack(cost: list[int], budget: int) -> list[list[int]]:
    """Consecutive indices into lines whose costs add up to at most ``budget`` (greedy; a
    single item over the budget gets a line of its own)."""
    out: list[list[int]] = [[]]
    used = 0
    for i, c in enumerate(cost):
        if out[-1] and used + c > budget:
            out.append([])
            used = 0
        out[-1].append(i)
        used += c
    return out


def _chunks(items: list[str], budget: int = 96) -> list[list[int]]:
    """Split cells into lines of at most ``budget`` characters (≈ 800 px at 14 px), so that a
    1000 px window needs no horizontal scrolling; a cell is at least as wide as its number
    ("4.862"), however short its word."""
    return _pack([max(min(len(s), 24), 5 if s else 0) + 2 for s in items], budget)


def _section(ex: LayerExplanation, b: int, unit: str) -> str:
    g, conv = ex.groupings[b], ex.converged[:, b].tolist()
    kept, sat = ex.word_kept(b, unit), ex.word_saturated(b).tolist()
    half, loose = (x.tolist() for x in _error_bars(ex, b, unit))
    amb = ex.ambiguous[:, b].tolist()
    scaled, narrow = _scaled(kept).tolist(), [_narrow(r) for r in kept]
    rel, total = relative(kept).tolist(), ex.word_kept_total(b, unit).tolist()
    ent, ent_total, pieces = ex.word_entropy(b, unit).tolist(), ex.word_entropy_total(b, unit).tolist(), \
        ex.word_pieces(b).tolist()
    mean = [sum(r) / len(r) if r else math.nan for r in kept.tolist()]
    sp = [ex.special_kept(b, unit).tolist(), ex.special_entropy(b, unit).tolist(),
          ex.saturated[:, b, list(g.specials)].tolist()]
    words, specials, kept = list(g.words), g.special_names(), kept.tolist()
    items = words + ([""] if specials else []) + specials  # the words, a gap, the specials
    per = f"{unit}/dim"
    tables = []
    for chunk in _chunks(items):
        rows = []
        for fi, name in enumerate(ex.features):
            cells = []
            for i in chunk:
                if i < len(words):
                    x = scaled[fi][i]
                    tip = (f"{words[i]} at {name}: kept {kept[fi][i]:.3f} {per}, {rel[fi][i]:.3f} × the sentence's "
                           f"mean word ({mean[fi]:.3f} {per}; scaled {x:.2f})\n{pieces[i]} piece"
                           f"{'s' if pieces[i] != 1 else ''}, kept in all {total[fi][i]:.1f} {unit}\nentropy H(X|s) "
                           f"= {ent[fi][i]:.3f} {per} (in all {ent_total[fi][i]:.1f} {unit})"
                           + (f"\n95 % interval: {kept[fi][i] - half[fi][i]:.3f} to {kept[fi][i] + half[fi][i]:.3f} "
                              f"{per}" if math.isfinite(half[fi][i]) and not sat[fi][i] else "")
                           + (f"\n{UNORDERED} not ordered: the interval overlaps that of the word ranked next to it"
                              if loose[fi][i] else "")
                           + ("\nsaturated: fully forgotten" if sat[fi][i] else "")
                           + ("" if conv[fi] else "\nnot converged: approximate"))
                    text = _e(_short(words[i], 24))
                    if sat[fi][i]:
                        text = f'<span class="ce-sat">{text}</span><span class="ce-satm">{SAT}</span>'
                    num = "0" if sat[fi][i] else _dim(kept[fi][i])
                    if math.isfinite(half[fi][i]) and not sat[fi][i]:
                        num += _pm(half[fi][i])
                    text += f'<span class="ce-num">{num}{UNORDERED if loose[fi][i] else ""}</span>'
                    style = f"background:rgb({','.join(map(str, _colour(x)))});color:{'#fff' if x > 0.55 else '#111'}"
                    cells.append(f'<td class="ce-w" style="{style}" title="{_e(tip)}">{text}</td>')
                elif i == len(words):
                    cells.append('<td class="ce-gap"></td>')
                else:
                    s = i - len(words) - 1
                    tip = (f"special token {specials[s]} at {name}: kept {sp[0][fi][s]:.3f} {per}, entropy "
                           f"H(X|s) = {sp[1][fi][s]:.3f} {per}" + ("; saturated" if sp[2][fi][s] else ""))
                    cells.append(f'<td class="ce-sp" title="{_e(tip)}">{_e(_short(specials[s], 24))}'
                                 f'<span class="ce-num">{_dim(sp[0][fi][s])}</span></td>')
            label = (_e(name) + f'<span class="ce-feat">mean word {_dim(mean[fi])} {_e(per)}</span>'
                     + ("" if conv[fi] else f'<span class="ce-ncl">{NC} not converged</span>')
                     + (f'<span class="ce-ncl">{AMBIGUOUS} ambiguous: another optimum '
                        f'{_dim(float(ex.ambiguity_gap[fi, b]))} nats/dim away keeps other words</span>' if amb[fi] else "")
                     + ('<span class="ce-narrow">spread &lt; 10 %: pale</span>' if narrow[fi] else ""))
            tr = "<tr>" if conv[fi] else '<tr class="ce-nc">'
            rows.append(f'{tr}<th scope="row">{label}</th>{"".join(cells)}</tr>')
        tables.append('<div class="ce-scroll"><table class="ce-grid"><tbody>' + "\n".join(rows)
                      + "</tbody></table></div>")
    return (f'<section class="ce-sentence"><h2>{b + 1}. {_e(_text(ex, b))}</h2>'
            f'<p class="ce-pred">{_e(_pred(ex, b))} · {len(words)} words · model {_e(ex.model)}</p>'
            + "\n".join(tables) + "</section>")


# -- ModelComparison ---------------------------------------------------------------------------

def comparison_html(cmp: ModelComparison, title: str | None = None, full_page: bool = True) -> str:
    """One standalone UTF-8 HTML page of a :class:`~captum_entropy.comparison.ModelComparison`
    (inline CSS, no script, no external resource): a legend, a table of corpus entropy per
    dimension against relative depth per model, then per sentence a word units × models table
    coloured by each unit's share of the kept information at the model's output feature, and
    the models' predictions. ``full_page=False``: a fragment."""
    title = title if title is not None else f"{' vs '.join(cmp.models)}: what each model keeps of each word"
    body = [f'<div class="ce-root"><h1>{_e(title)}</h1>', _cmp_legend(cmp), _depth_section(cmp)]
    body += [_cmp_section(cmp, b) for b in range(len(cmp))]
    body.append("</div>")
    return _page(title, body, full_page)


def _at(cmp: ModelComparison) -> str:
    fis = [cmp.feature_index(m) for m in range(len(cmp.models))]
    return (OUTPUT if all(cmp.features[m][fi] == OUTPUT for m, fi in enumerate(fis))
            else "output (its last layer where it has no output)")


def _cmp_legend(cmp: ModelComparison) -> str:
    return (
        '<div class="ce-legend"><p><span>0 %</span> <span class="ce-bar"></span> '
        "<span>the sentence's largest share</span></p>"
        "<p>Per sentence, colour and number = each word unit's <b>share (%) of the kept information</b> "
        f"per dimension of the sentence's units, at each model's {_e(_at(cmp))}: <b>darker = more kept</b>; one "
        "scale for all models of a sentence; a row sums to 100 % over the units the model has (equal shares: every "
        "unit kept alike). Word units: the models' tokenizers differ, so their words are aligned on the coarsest "
        "segmentation all of them refine; a unit reads the mean of the model's words in it, each word the mean "
        "over its pieces and dimensions of log(σ<sub>max</sub>/σ), so neither a tokenizer's pieces nor its extra "
        "words make a unit darker. Hover a cell for the unit's entropy per dimension (nats/dim).</p>"
        "<p>Depth table: corpus entropy = the mean over a sentence's words (each model's own) of H(X<sub>word</sub>|s) per "
        "embedding dimension, then over the sentences, in <b>nats/dim</b> (low = kept; darker = lower), with a 95 % "
        "bootstrap interval over sentences; relative depth = layer l of N at l/N, the prediction at 1.25.</p><ul>"
        f'<li><span class="ce-ncx">&nbsp;12.3&nbsp;</span> {NC} not converged: dashed border; the optimiser\'s '
        "stationarity test did not pass, the numbers are approximate</li>"
        f'<li><span class="ce-none">&nbsp;{NONE}&nbsp;</span> grey: the model has no word in this unit (it truncated '
        "the sentence); its shares are over the words it has</li></ul></div>"
    )


def _depth_section(cmp: ModelComparison, seed: int = 0, n_resamples: int = 2000) -> str:
    n_b, corpus, per_sentence = len(cmp), cmp.corpus_entropy(), cmp.mean_word_entropy
    values = [float(v) for c in corpus for v in c.tolist() if math.isfinite(v)]
    lo, hi = (min(values), max(values)) if values else (0.0, 0.0)
    rows = []
    for m, name in enumerate(cmp.models):
        order, conv = _depth_order(cmp.depth[m]), cmp.converged[m].sum(1).tolist()
        for k, fi in enumerate(order):
            v = float(corpus[m][fi])
            b_lo, b_hi = _bootstrap(per_sentence[m][fi].numpy(), n_resamples, seed)
            interval = "n/a" if math.isnan(b_lo) else f"{_dim(b_lo)} – {_dim(b_hi)}"
            x = (hi - v) / (hi - lo) if hi > lo and math.isfinite(v) else 0.0  # darker = lower entropy
            style = f"background:rgb({','.join(map(str, _colour(x)))});color:{'#fff' if x > 0.55 else '#111'}"
            nc = conv[fi] < n_b
            model = f'<th scope="rowgroup" rowspan="{len(order)}">{_e(name)}</th>' if k == 0 else ""
            feat = _e(cmp.features[m][fi]) + (f'<span class="ce-ncl">{NC} not converged</span>' if nc else "")
            tip = _e(f"{name} at {cmp.features[m][fi]}: {v:.4f} nats/dim; converged in {conv[fi]} of {n_b} sentences")
            classes = " ".join(c for c, on in (("ce-first", k == 0), ("ce-nc", nc)) if on)
            rows.append((f'<tr class="{classes}">' if classes else "<tr>") + f'{model}<th scope="row">{feat}</th>'
                        f'<td class="ce-v">{cmp.depth[m][fi]:.2f}</td>'
                        f'<td class="ce-v ce-w" style="{style}" title="{tip}">{_dim(v)}</td>'
                        f'<td class="ce-v">{interval}</td><td class="ce-v">{conv[fi]}/{n_b}</td></tr>')
    head = ('<thead><tr><th class="ce-l">model</th><th class="ce-l">feature</th><th>relative depth</th>'
            "<th>entropy (nats/dim)</th><th>95 % interval</th><th>converged</th></tr></thead>")
    return (f'<section class="ce-depth-section"><h2>Corpus entropy against relative depth ({n_b} sentence'
            f'{"s" if n_b != 1 else ""})</h2><div class="ce-scroll"><table class="ce-grid ce-depth">{head}<tbody>'
            + "\n".join(rows) + "</tbody></table></div></section>")


def _unit_chunks(units: list[str], budget: int = 780) -> list[list[int]]:
    """Split a sentence's unit columns into tables of at most ``budget`` pixels (≈ a 1000 px
    window less the model names), as few as fit and of balanced widths (no lone last column)."""
    cost = [max(7 * min(len(u), 24), 36) + 16 for u in units]  # 12 px header text, a number at least

    for k in range(max(1, math.ceil(sum(cost) / budget)), len(units) + 1):
        for target in range(math.ceil(sum(cost) / k), budget + 1, 4):
            out = _pack(cost, target)
            if len(out) <= k:
                return out
    return _pack(cost, budget)


def _cmp_section(cmp: ModelComparison, b: int) -> str:
    n_m, units = len(cmp.models), list(cmp.units[b])
    fis = [cmp.feature_index(m) for m in range(n_m)]
    conv = [bool(cmp.converged[m][fis[m], b]) for m in range(n_m)]
    share = np.stack([cmp.share[m][fis[m], b, : len(units)].numpy() * 100 for m in range(n_m)]).reshape(n_m, -1)
    ent = np.stack([cmp.entropy[m][fis[m], b, : len(units)].numpy() for m in range(n_m)]).reshape(n_m, -1)
    top = float(np.nanmax(share)) if np.isfinite(share).any() else 0.0
    tables = []
    for chunk in _unit_chunks(units):
        head = "".join(f'<th scope="col">{_e(_short(units[u], 24))}</th>' for u in chunk)
        rows = []
        for m, name in enumerate(cmp.models):
            feature = cmp.features[m][fis[m]]
            cells = []
            for u in chunk:
                v = float(share[m, u])
                if not math.isfinite(v):
                    tip = f"{units[u]}: {name} has no word here (it truncated the sentence)"
                    cells.append(f'<td class="ce-none" title="{_e(tip)}">{NONE}</td>')
                    continue
                x = v / top if top > 0 else 0.0
                tip = (f"{units[u]} · {name} at {feature}: {v:.1f} % of the kept information per dimension of the "
                       "sentence's units"
                       f"\nentropy per dimension {float(ent[m, u]):.3f} nats/dim"
                       + ("" if conv[m] else "\nnot converged: approximate"))
                style = f"background:rgb({','.join(map(str, _colour(x)))});color:{'#fff' if x > 0.55 else '#111'}"
                cells.append(f'<td class="ce-w ce-v" style="{style}" title="{_e(tip)}">{v:.1f}</td>')
            label = (_e(name) + f'<span class="ce-feat">{_e(feature)}</span>'
                     + ("" if conv[m] else f'<span class="ce-ncl">{NC} not converged</span>'))
            rows.append(("<tr>" if conv[m] else '<tr class="ce-nc">') + f'<th scope="row">{label}</th>'
                        + "".join(cells) + "</tr>")
        tables.append('<div class="ce-scroll"><table class="ce-grid"><thead><tr><th>share (%)</th>'
                      f"{head}</tr></thead><tbody>" + "\n".join(rows) + "</tbody></table></div>")
    preds = " · ".join(f'<span class="ce-nw">{_e(name)}: {_e(_cmp_pred(cmp, m, b))}</span>'
                       for m, name in enumerate(cmp.models))
    return (f'<section class="ce-sentence"><h2>{b + 1}. {_e(_cmp_text(cmp, b))}</h2>'
            f'<p class="ce-pred">predicted: {preds} · {len(units)} word units</p>' + "\n".join(tables) + "</section>")
