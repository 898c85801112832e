"""One standalone HTML page: inline CSS, no script, no external resource; every string escaped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

from ._common import NC, RGB, SAT, _check, _colour, _e, _pred, _scaled, _short, _text

if TYPE_CHECKING:
    from ..analysis import LayerExplanation


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
.ce-grid td{padding:2px 5px;border:2px solid transparent;border-radius:3px;white-space:nowrap}
.ce-ncl{display:block;color:#b03a2e;font-weight:400}
tr.ce-nc td.ce-w,.ce-ncx{border:2px dashed #b03a2e !important}
.ce-sat{text-decoration:line-through;text-decoration-color:#c0392b;text-decoration-thickness:2px}
.ce-satm{color:#c0392b;font-weight:700;padding-left:2px}
td.ce-sp,.ce-sp{background:#e9ebef;color:#7a808c;font-style:italic}td.ce-gap{padding:0 4px}
""" % tuple(",".join(map(str, c)) for c in RGB)


def explanation_html(ex: LayerExplanation, title: str | None = None, unit: str = "nats",
                     sentences: Sequence[int] | None = None, full_page: bool = True) -> str:
    """One standalone UTF-8 HTML page (inline CSS, no script, no external resource): a legend,
    then per sentence a table rows = features, cells = words coloured by the row-scaled kept
    information; hover a word for its absolute numbers. ``full_page=False``: a fragment."""
    title = title if title is not None else f"{ex.model}: what each feature keeps of each word"
    idx = range(len(ex)) if sentences is None else [_check(ex, b) for b in sentences]
    body = [f'<div class="ce-root"><h1>{_e(title)}</h1>', _legend(ex, unit)]
    body += [_section(ex, b, unit) for b in idx]
    body.append("</div>")
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
        f"<p>Colour = kept information log(σ<sub>max</sub>/σ) of the word, summed over its tokens' "
        f"{ex.n_dims} dimensions, <b>scaled per row</b> (each feature: lightest = its least kept word, "
        "darkest = its most kept word): <b>darker = more kept</b>. Hover a word for the absolute kept "
        f"information and the entropy H(X|s) in {_e(unit)} (low entropy = kept).</p><ul>"
        f'<li><span class="ce-ncx">&nbsp;word&nbsp;</span> {NC} not converged: dashed border; the optimiser\'s '
        "stationarity test did not pass, the numbers are approximate</li>"
        f'<li><span class="ce-sat">word</span><span class="ce-satm">{SAT}</span> saturated: fully forgotten '
        "(every token at the σ cap)</li>"
        '<li><span class="ce-sp">&nbsp;[CLS]&nbsp;</span> special tokens, grey: not words, not coloured</li></ul></div>'
    )


def _chunks(items: list[str], budget: int = 96) -> list[list[int]]:
    """Split cells into lines of at most ``budget`` characters (≈ 800 px at 14 px), so that a
    1000 px window needs no horizontal scrolling."""
    out: list[list[int]] = [[]]
    used = 0
    for i, s in enumerate(items):
        cost = min(len(s), 24) + 2
        if out[-1] and used + cost > budget:
            out.append([])
            used = 0
        out[-1].append(i)
        used += cost
    return out


def _section(ex: LayerExplanation, b: int, unit: str) -> str:
    g, conv = ex.groupings[b], ex.converged[:, b].tolist()
    kept, ent, sat = ex.word_kept(b, unit), ex.word_entropy(b, unit).tolist(), ex.word_saturated(b).tolist()
    scaled, ranges = _scaled(kept).tolist(), [(min(r), max(r)) if r else (0.0, 0.0) for r in kept.tolist()]
    sp = [ex.special_kept(b, unit).tolist(), ex.special_entropy(b, unit).tolist(),
          ex.saturated[:, b, list(g.specials)].tolist()]
    words, specials, kept = list(g.words), g.special_names(), kept.tolist()
    items = words + ([""] if specials else []) + specials  # the words, a gap, the specials
    tables = []
    for chunk in _chunks(items):
        rows = []
        for fi, name in enumerate(ex.layers):
            cells = []
            for i in chunk:
                if i < len(words):
                    x, (lo, hi) = scaled[fi][i], ranges[fi]
                    tip = (f"{words[i]} at {name}: kept {kept[fi][i]:.1f} {unit} (row {lo:.1f}–{hi:.1f}; scaled "
                           f"{x:.2f})\nentropy H(X|s) = {ent[fi][i]:.1f} {unit}"
                           + ("\nsaturated: fully forgotten" if sat[fi][i] else "")
                           + ("" if conv[fi] else "\nnot converged: approximate"))
                    text = _e(_short(words[i], 24))
                    if sat[fi][i]:
                        text = f'<span class="ce-sat">{text}</span><span class="ce-satm">{SAT}</span>'
                    style = f"background:rgb({','.join(map(str, _colour(x)))});color:{'#fff' if x > 0.55 else '#111'}"
                    cells.append(f'<td class="ce-w" style="{style}" title="{_e(tip)}">{text}</td>')
                elif i == len(words):
                    cells.append('<td class="ce-gap"></td>')
                else:
                    s = i - len(words) - 1
                    tip = (f"special token {specials[s]} at {name}: kept {sp[0][fi][s]:.1f} {unit}, entropy "
                           f"H(X|s) = {sp[1][fi][s]:.1f} {unit}" + ("; saturated" if sp[2][fi][s] else ""))
                    cells.append(f'<td class="ce-sp" title="{_e(tip)}">{_e(_short(specials[s], 24))}</td>')
            label = _e(name) + ("" if conv[fi] else f'<span class="ce-ncl">{NC} not converged</span>')
            tr = "<tr>" if conv[fi] else '<tr class="ce-nc">'
            rows.append(f'{tr}<th scope="row">{label}</th>{"".join(cells)}</tr>')
        tables.append('<div class="ce-scroll"><table class="ce-grid"><tbody>' + "\n".join(rows)
                      + "</tbody></table></div>")
    return (f'<section class="ce-sentence"><h2>{b + 1}. {_e(_text(ex, b))}</h2>'
            f'<p class="ce-pred">{_e(_pred(ex, b))} · {len(words)} words · model {_e(ex.model)}</p>'
            + "\n".join(tables) + "</section>")
