"""captum_entropy.viz: the text table, the figures, the HTML page (escaping, a headless-browser
render) and Captum's visualize_text rows, on hand-built explanations (no model)."""

from __future__ import annotations

import html
import io
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from captum_entropy import viz
from captum_entropy.viz._common import _dim
from captum_entropy.viz.figures import _bootstrap
from captum_entropy.analysis import LayerExplanation, relative_depth
from captum_entropy.entropy import HALF_LOG_2PI_E
from captum_entropy.words import group_tokens

from .browser import render

K = 384
LIBRARY_MIN_BOOTSTRAP = viz._common.MIN_BOOTSTRAP  # before the fixture below lowers it
LOG_CAP = math.log(2.0)
SENTENCES = [
    ("[CLS] the un ##believ ##able film is great [SEP]", "the unbelievable film is great"),
    ("[CLS] a dull movie [SEP]", "a dull movie"),
]


def token_kept(fi: int, t: int) -> float:
    """The synthetic kept information (nats) of token position t at feature l."""
    return 20.0 * (fi + 1) + 7.0 * t


def make(sentences=SENTENCES, layers=("layer1", "layer2", "layer3"), *, not_converged=((1, 0),),
         saturated_word=(2, 0, "is"), label_names=("negative", "positive"), model="toy") -> LayerExplanation:
    """L features × B sentences, WordPiece tokens with [CLS]/[SEP], the short ones padded.

    ``not_converged``: (feature, sentence) pairs; ``saturated_word``: (feature, sentence, word)
    whose tokens sit at the σ cap (kept 0)."""
    names = [*layers, "output"]
    toks = [s.split() for s, _ in sentences]
    T = max(len(t) for t in toks)
    L, B = len(names), len(toks)
    mask = torch.zeros(B, T, dtype=torch.bool)
    groupings = []
    for b, t in enumerate(toks):
        mask[b, : len(t)] = True
        groupings.append(group_tokens(t + ["[PAD]"] * (T - len(t)), mask=mask[b].tolist()))
    kept = torch.tensor([[[token_kept(fi, t) for t in range(T)] for _ in range(B)] for fi in range(L)])
    sat = torch.zeros(L, B, T, dtype=torch.bool)
    if saturated_word is not None:
        fi, b, word = saturated_word
        g = groupings[b]
        for p in g.spans()[g.words.index(word)]:
            sat[fi, b, p] = True
    kept = torch.where(sat | ~mask, torch.zeros(()), kept)
    entropy = K * (HALF_LOG_2PI_E + LOG_CAP) - kept
    entropy = torch.where(mask, entropy, torch.full((), math.nan))
    converged = torch.ones(L, B, dtype=torch.bool)
    for fi, b in not_converged:
        converged[fi, b] = False
    return LayerExplanation(
        model=model, features=names, depth=relative_depth(names), texts=[t for _, t in sentences], groupings=groupings,
        token_entropy=entropy, token_kept=kept, log_sigma=torch.zeros(L, B, T), mask=mask,
        max_sigma=torch.full((B,), 2.0), saturated=sat, converged=converged, stationarity=torch.rand(L, B),
        distortion=torch.full((L, B), 0.05), steps=torch.full((L, B), 40), prediction=torch.arange(B) % 2 * -1 + 1,
        probability=torch.tensor([0.93, 0.71, 0.6, 0.55][:B] + [0.5] * max(0, B - 4)),
        target=torch.full((B,), -1), n_dims=K, label_names=list(label_names),
    )


@pytest.fixture
def ex() -> LayerExplanation:
    return make()


def word_kept_expected(ex: LayerExplanation, b: int, fi: int, word: str) -> float:
    """The word's kept information per dimension: the mean over its tokens, over K."""
    g = ex.groupings[b]
    span = g.spans()[g.words.index(word)]
    return sum(float(ex.token_kept[fi, b, p]) for p in span) / len(span) / K



@pytest.fixture(autouse=True)
def intervals_from_two_sentences(monkeypatch):
    """The hand-built explanations hold 2 sentences; the library draws an interval from 5 on
    (test_a_nearly_uniform_row_stays_pale_and_small_samples_get_no_interval checks that)."""
    monkeypatch.setattr("captum_entropy.viz._common.MIN_BOOTSTRAP", 2)

# -- the text table ----------------------------------------------------------------------------

def test_table_words_units_marks_and_specials(ex):
    out = viz.explanation_table(ex, [0])
    lines = out.splitlines()
    assert lines[0] == '[0] "the unbelievable film is great"'
    assert "predicted: positive (p = 0.93)" in lines[1] and "nats/dim" in out and f"{K} dimensions" in out
    assert "a word cut into pieces reads like one piece with the same σ" in " ".join(out.split())
    header = next(x for x in lines if x.startswith("word "))
    assert header.split() == ["word", "layer1", "layer2~", "layer3", "output"]
    row = next(x for x in lines if x.startswith("unbelievable "))
    # tokens 2, 3, 4: the mean 20(l+1) + 7·3, per dimension; layer2 not converged -> "~"
    assert row.split() == ["unbelievable", _dim(41 / K), _dim(61 / K) + "~", _dim(81 / K), _dim(101 / K)]
    assert next(x for x in lines if x.startswith("is ")).split() == ["is", _dim(62 / K), _dim(82 / K) + "~", "0×",
                                                                     _dim(122 / K)]
    at = lines.index("specials (not words; not in the mean word):")
    assert [x.split()[0] for x in lines[at + 1:at + 3]] == ["[CLS]", "[SEP]"]
    assert lines[at + 1].split() == ["[CLS]", _dim(20 / K), _dim(40 / K) + "~", _dim(60 / K), _dim(80 / K)]
    mean = next(x for x in lines if x.startswith("mean word"))
    assert mean.split()[2] == _dim(sum(word_kept_expected(ex, 0, 0, w) for w in ex.words(0)) / 5)
    assert "~ not converged: layer2 (the optimiser's stationarity test did not pass; numbers approximate)" in out
    assert "0× saturated: fully forgotten" in out
    assert "[PAD]" not in out and all(len(x) <= 100 for x in lines)
    # sentence 1: converged everywhere, nothing saturated: no footnotes, no marks
    other = viz.explanation_table(ex, [1])
    assert "~" not in other and "×" not in other and "predicted: negative (p = 0.71)" in other


def test_table_bits_are_nats_over_log2(ex):
    bits_table = viz.explanation_table(ex, [1], unit="bits")
    bits = next(x for x in bits_table.splitlines() if x.startswith("dull "))
    assert "bits/dim" in bits_table
    assert [_dim(float(v) / math.log(2)) for v in ex.word_kept(1)[:, 1]] == bits.split()[1:]
    torch.testing.assert_close(ex.word_kept(1, "bits"), ex.word_kept(1) / math.log(2))
    with pytest.raises(ValueError, match="unit"):
        viz.explanation_table(ex, unit="bans")


def test_table_wraps_many_features_and_truncates_long_words():
    long = "antidisestablishmentarianism-and-more"
    ex = make([(f"[CLS] {long} ok [SEP]", "x")], layers=[f"encoder.layer.{i}" for i in range(12)],
              not_converged=(), saturated_word=None)
    lines = viz.explanation_table(ex).splitlines()
    assert max(len(x) for x in lines) <= 100
    blocks = [x for x in lines if x.strip().startswith("features ")]
    assert len(blocks) >= 2 and blocks[0].strip().startswith("features 1-")
    assert any(x.startswith(long[:17] + "…") for x in lines) and long not in "\n".join(lines)


def test_show_prints_the_table(ex):
    buf = io.StringIO()
    ex.show([0], file=buf)
    assert buf.getvalue() == viz.explanation_table(ex, [0]) + "\n"


# -- figures -------------------------------------------------------------------------------------

def _pixels(path: Path) -> np.ndarray:
    import matplotlib.image as mpimg

    img = mpimg.imread(str(path))[..., :3]
    assert img.std() > 0.05, "blank picture"
    assert len(np.unique((img * 255).astype(np.uint8).reshape(-1, 3), axis=0)) > 50
    return img


def test_heatmap_labels_markers_and_png(ex, tmp_path):
    pytest.importorskip("matplotlib")
    fig = viz.plot_explanation(ex, "heatmap", 0)
    ax, bar = fig.axes[0], fig.axes[-1]
    assert ax.get_xlabel() == "word (sentence order)" and ax.get_ylabel() == "feature (shallow → deep)"
    assert bar.get_ylabel() == viz.figures.SCALE_LABEL == (
        "kept information per dimension,\nscaled per row (0 = row min,\n1 = row max; spread < 10 %: pale)")
    assert [t.get_text() for t in ax.get_xticklabels()] == ex.words(0)
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[1].startswith("layer2 (not converged)\n")
    assert rows[0] == f"layer1\n{_dim(27 / K)}–{_dim(69 / K)} nats/dim"
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("×") == 1 and _dim(41 / K) in texts and len(texts) == 4 * 5  # 4 features × 5 words
    assert any(p.get_hatch() == "///" for p in ax.patches)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "not converged (approximate)" in legend and "saturated: fully forgotten" in legend
    assert "predicted: positive (p = 0.93)" in fig.get_suptitle()
    image = ax.get_images()[0].get_array()
    assert np.allclose(image.min(axis=1), 0) and np.allclose(image.max(axis=1), 1)  # per row 0..1
    _pixels(Path(viz.save_figure(fig, tmp_path / "heat.png")))


def test_heatmap_long_sentence_wraps_into_panels():
    pytest.importorskip("matplotlib")
    words = " ".join(f"w{i}" for i in range(45))
    ex = make([(f"[CLS] {words} [SEP]", words)], saturated_word=None, not_converged=())
    fig = viz.plot_explanation(ex, "heatmap", 0)
    panels = [a for a in fig.axes if a.get_images()]
    assert len(panels) == 2 and [len(a.get_xticklabels()) for a in panels] == [23, 22]
    assert not panels[0].texts  # > 20 words: no numbers in the cells, the ranges stay in the row labels
    assert fig.get_size_inches()[0] <= 20


def test_depth_figure(ex, tmp_path):
    pytest.importorskip("matplotlib")
    fig = viz.plot_explanation(ex, "depth")
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("relative depth") and ax.get_ylabel().startswith(
        "mean entropy per word per dimension (nats/dim)")
    assert [t.get_text() for t in ax.get_xticklabels()] == ex.features
    assert list(ax.get_xticks()) == pytest.approx([1 / 3, 2 / 3, 1.0, 1.25])
    mean = next(line for line in ax.get_lines() if line.get_linewidth() > 2)
    assert mean.get_ydata() == pytest.approx(ex.corpus_entropy().numpy(), rel=1e-6)
    sentences = [line for line in ax.get_lines() if line.get_linewidth() < 1]
    assert len(sentences) == 2
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["one sentence (each line)", "not converged", "95 % bootstrap interval of the mean",
                      "mean over 2 sentences"]
    _pixels(Path(viz.save_figure(fig, tmp_path / "depth.png")))
    bits = viz.plot_explanation(ex, "depth", unit="bits").axes[0]
    assert "(bits/dim)" in bits.get_ylabel()
    bold = next(line for line in bits.get_lines() if line.get_linewidth() > 2)
    assert bold.get_ydata() == pytest.approx(ex.corpus_entropy().numpy() / math.log(2), rel=1e-6)


def test_bootstrap_band_is_seeded_and_brackets_the_mean():
    v = np.array([1.0, 2.0, 3.0, 10.0])
    lo, hi = _bootstrap(v, 2000, 0)
    assert (lo, hi) == _bootstrap(v, 2000, 0) and lo < v.mean() < hi and lo >= 1.0 and hi <= 10.0
    assert all(math.isnan(x) for x in _bootstrap(np.array([1.0]), 100, 0))


def test_unknown_kind_and_missing_matplotlib(ex, monkeypatch):
    with pytest.raises(ValueError, match="'heatmap', 'depth'"):
        viz.plot_explanation(ex, "pie")
    with pytest.raises(IndexError, match="2 sentences"):
        viz.plot_explanation(ex, "heatmap", 5)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        ex.plot("depth")


def test_package_imports_without_matplotlib():
    code = ("import sys; sys.modules['matplotlib'] = None\n"
            "import captum_entropy.viz, captum_entropy.analysis\n"
            "assert 'matplotlib.figure' not in sys.modules\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr


# -- files ---------------------------------------------------------------------------------------

def test_write_text_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "report.html"
    assert viz.write_text(path, "a long old text " * 100) == str(path)
    assert viz.write_text(path, "néw") == str(path)
    assert path.read_bytes() == "néw".encode("utf-8") and os.listdir(tmp_path) == ["report.html"]

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken)
    with pytest.raises(OSError, match="disk full"):
        viz.write_text(path, "half")
    assert path.read_text(encoding="utf-8") == "néw" and os.listdir(tmp_path) == ["report.html"]


def test_save_figure_formats_and_failure(ex, tmp_path):
    pytest.importorskip("matplotlib")
    fig = viz.plot_explanation(ex, "depth")
    magic = {"png": b"\x89PNG", "svg": b"<?xml", "pdf": b"%PDF"}
    for fmt, head in magic.items():
        assert Path(viz.save_figure(fig, tmp_path / f"f.{fmt}")).read_bytes()[: len(head)] == head
    with pytest.raises(ValueError, match=r"\.png, \.svg or \.pdf"):
        viz.save_figure(fig, tmp_path / "f.jpg")

    class Broken:
        def savefig(self, f, **kw):
            f.write(b"partial")
            raise RuntimeError("renderer died")

    old = (tmp_path / "f.png").read_bytes()
    with pytest.raises(RuntimeError, match="renderer died"):
        viz.save_figure(Broken(), tmp_path / "f.png")
    assert (tmp_path / "f.png").read_bytes() == old and sorted(os.listdir(tmp_path)) == ["f.pdf", "f.png", "f.svg"]


# -- HTML ----------------------------------------------------------------------------------------

NASTY = ("[CLS] <script>alert(1)</script> \"quotes\" a&b 'single' [SEP]", "<script>alert(1)</script> \"quotes\" a & b")


def nasty() -> LayerExplanation:
    ex = make([NASTY, SENTENCES[1]], label_names=("<b>neg</b>", 'pos"itive'), model="m<odel>",
              saturated_word=(2, 0, '"quotes"'))
    ex.features[0] = "layer<1>&"
    return ex


def test_html_escapes_everything():
    page = nasty().to_html(title="<title>x</title>")
    assert "<script" not in page.lower() and "alert(1)</" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&quot;quotes&quot;" in page
    assert "a &amp; b" in page and "a&amp;b" in page and "&#x27;single&#x27;" in page
    assert "layer&lt;1&gt;&amp;" in page and "m&lt;odel&gt;" in page and "&lt;title&gt;x&lt;/title&gt;" in page
    assert "<b>neg</b>" not in page and "pos&quot;itive" in page
    for title in re.findall(r'title="([^"]*)"', page):  # attributes hold no raw < > &
        assert "<" not in title and ">" not in title and not re.search(r"&(?!amp;|lt;|gt;|quot;|#x27;)", title)


def test_html_structure_marks_and_values(ex):
    page = viz.explanation_html(ex)
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page
    assert "http" not in page.replace('http-equiv="Content-Security-Policy"', "")  # nothing external
    assert "kept information" in page and "scaled per row" in page and "darker = more kept" in page
    assert page.count('<td class="ce-sp"') == 4 * 2 * 2  # features × sentences × ([CLS], [SEP])
    assert page.count('<tr class="ce-nc">') == 1 and page.count("~ not converged</span>") == 1
    assert page.count('<span class="ce-sat">is</span><span class="ce-satm">×</span>') == 1
    kept = word_kept_expected(ex, 0, 0, "unbelievable")  # 41 / K per dimension; the row: 27, 41, 55, 62, 69
    mean = (27 + 41 + 55 + 62 + 69) / 5 / K
    entropy = HALF_LOG_2PI_E + LOG_CAP - kept
    assert (f'title="unbelievable at layer1: kept {kept:.3f} nats/dim, {kept / mean:.3f} × the sentence&#x27;s '
            f'mean word ({mean:.3f} nats/dim; scaled {(41 - 27) / (69 - 27):.2f})\n3 pieces, kept in all '
            f'{3 * 41:.1f} nats\nentropy H(X|s) = {entropy:.3f} nats/dim (in all {3 * K * entropy:.1f} nats)"') in page
    assert f'<span class="ce-num">{_dim(kept)}</span>' in page and f"mean word {_dim(mean)} nats/dim" in page
    assert "<h2>1. the unbelievable film is great</h2>" in page and "predicted: positive (p = 0.93)" in page
    # row max darkest (white text), row min lightest (dark text)
    assert 'rgb(8,48,107);color:#fff"' in page and 'rgb(247,251,255);color:#111"' in page
    bits = viz.explanation_html(ex, unit="bits")
    assert f"kept {kept / math.log(2):.3f} bits/dim" in bits
    fragment = viz.explanation_html(ex, full_page=False)
    assert fragment.startswith("<style>") and "<html" not in fragment
    assert ex._repr_html_() == fragment


def test_long_sentence_html_wraps_into_tables(tmp_path):
    words = " ".join(f"word{i:02d}" for i in range(40))
    page = make([(f"[CLS] {words} [SEP]", words)], saturated_word=None).to_html()
    assert page.count('<table class="ce-grid">') == 4  # 40 words + a gap + 2 specials, 12 cells of 8 characters a line
    first = page.split('<table class="ce-grid">')[1].split("</tr>")[0]
    assert first.count('<td class="ce-w"') == 12 and '>word11<span class="ce-num">' in first


def test_html_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "page.html"
    ex = nasty()
    viz.write_text(page, ex.to_html())
    dom, shot = render(page, tmp_path)
    assert "<script" not in dom.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert html.unescape(title) == "m<odel>: what each feature keeps of each word"
    assert dom.count('<td class="ce-w"') == nasty().to_html().count('<td class="ce-w"')
    pytest.importorskip("matplotlib")
    img = _pixels(shot)
    assert img.shape[:2] == (1400, 1000)
    dark_blue = np.all(np.abs(img * 255 - np.array([8, 48, 107])) < 12, axis=-1)
    assert dark_blue.sum() > 200  # the row maxima are painted


# -- Captum's visualize_text -------------------------------------------------------------------

def test_visualize_text_records(ex):
    T = ex.token_kept.shape[-1]
    lig = torch.arange(T, dtype=torch.float32) - 6.0  # per token, signed; the largest |value| is negative
    records = ex.visualize_text_records(0, "layer3", {"LIG": lig}, true_label=1)
    ours, theirs = records
    kept = ex.word_kept(0)[2]
    assert theirs.raw_input_ids == ex.words(0)  # ours carry a tooltip each: <span title="kept ...">word</span>
    assert [re.sub(r"<[^>]*>", "", w) for w in ours.raw_input_ids] == ex.words(0)
    assert torch.allclose(ours.word_attributions, kept / kept.max()) and float(ours.word_attributions.max()) == 1.0
    assert ours.pred_class == "positive" and ours.true_class == "positive" and ours.pred_prob == pytest.approx(0.93)
    assert ours.attr_class == "kept per dim (layer3)" and ours.attr_score == pytest.approx(float(kept.sum()))
    assert kept.tolist() == pytest.approx([word_kept_expected(ex, 0, 2, w) for w in ex.words(0)])
    grouped = torch.tensor([1 - 6.0, (2 + 3 + 4) - 18.0, 5 - 6.0, 6 - 6.0, 7 - 6.0])  # the, unbelievable, ...
    assert torch.allclose(theirs.word_attributions, grouped / 9.0) and float(theirs.word_attributions.min()) == -1.0
    assert theirs.attr_class == "LIG" and theirs.attr_score == pytest.approx(float(grouped.sum()))
    with pytest.raises(ValueError, match=rf"needs \({T},\)"):
        ex.visualize_text_records(0, "output", {"bad": torch.zeros(T, 8)})
    with pytest.raises(KeyError, match="no feature"):
        ex.visualize_text_records(0, "layer9")
    from captum.attr import visualization

    pytest.importorskip("IPython")
    shown = visualization.visualize_text(records).data
    assert "kept per dim (layer3)" in shown and "unbelievable" in shown


def test_visualize_text_records_escape_for_captum():
    ex = nasty()
    (ours,) = viz.visualize_text_records(ex, 0, "output", {}, None)
    assert re.sub(r"<span[^>]*>|</span>", "", ours.raw_input_ids[0]) == "&lt;script&gt;alert(1)&lt;/script&gt;"
    assert ours.true_class == "n/a"
    assert ours.pred_class == "pos&quot;itive"


def test_a_nearly_uniform_row_stays_pale_and_small_samples_get_no_interval(monkeypatch):
    from captum_entropy.viz._common import _bootstrap, _narrow, _scaled

    monkeypatch.setattr("captum_entropy.viz._common.MIN_BOOTSTRAP", LIBRARY_MIN_BOOTSTRAP)
    assert LIBRARY_MIN_BOOTSTRAP == 5

    rows = torch.tensor([[100.0, 101.0, 100.5], [0.0, 50.0, 100.0]])
    scaled = _scaled(rows)
    torch.testing.assert_close(scaled[0], torch.tensor([0.0, 1.0, 0.5]) / 10.1)  # a 1 % spread: pale
    torch.testing.assert_close(scaled[1], torch.tensor([0.0, 0.5, 1.0]))         # a real spread: full scale
    assert _narrow(rows[0]) and not _narrow(rows[1])
    assert all(map(math.isnan, _bootstrap(np.array([1.0, 2.0, 3.0, 4.0]), 100, 0)))
    lo, hi = _bootstrap(np.array([1.0, 2.0, 3.0, 4.0, 5.0]), 2000, 0)
    assert 1.0 < lo < 3.0 < hi < 5.0


def with_error_bars() -> LayerExplanation:
    """The fixture with a standard error of 0.005 in log σ on every token of sentence 0 at layer1
    (the rest unmeasured) and its output ambiguous: at layer1 the words read 27, 41, 55, 62, 69 /K
    nats/dim, so ± 1.96·0.005 separates "the" and "unbelievable" from the rest, while "film",
    "is" and "great" overlap their rank neighbours."""
    ex = make()
    ex.log_sigma_se[0, 0] = torch.where(ex.mask[0], 0.005, math.nan)
    ex.ambiguous[3, 0], ex.ambiguity_gap[3, 0] = True, 0.04
    return ex


def test_error_bars_order_words_and_show_in_every_view(tmp_path):
    ex = with_error_bars()
    se = ex.word_kept_se(0)
    assert torch.allclose(se[0], torch.full((5,), 0.005)) and torch.isnan(se[1:]).all()
    ordered = ex.word_ordered(0)[0]
    words = ex.words(0)
    i = {w: k for k, w in enumerate(words)}
    assert ordered[i["great"], i["the"]] and ordered[i["film"], i["unbelievable"]]  # intervals apart
    assert not ordered[i["great"], i["is"]] and not ordered[i["is"], i["film"]]  # they overlap
    assert not ordered[i["the"], i["great"]] and not ex.word_ordered(0)[1].any()  # unmeasured: nothing ordered
    assert ex.word_undetermined(0)[0].tolist() == [False, False, True, True, True]
    # the text table: value ± half-width, ≈ where the rank is not determined, ? on the ambiguous feature
    lines = viz.explanation_table(ex, [0]).splitlines()
    assert next(x for x in lines if x.startswith("word ")).split()[-1] == "output?"
    half = f"±{1.96 * 0.005:.2f}".replace("±0.", "±.")
    assert next(x for x in lines if x.startswith("the ")).split()[1] == _dim(27 / K) + half
    assert next(x for x in lines if x.startswith("film ")).split()[1] == _dim(55 / K) + half + "≈"
    text = " ".join(lines)
    assert "≈ not ordered" in text and "? ambiguous" in text and "output (gap 0.040 nats/dim)" in text
    # the HTML page: the interval in the tooltip and the cell, the ambiguity in the row label
    page = viz.explanation_html(ex)
    low, high = 27 / K - 1.96 * 0.005, 27 / K + 1.96 * 0.005
    assert f"95 % interval: {low:.3f} to {high:.3f} nats/dim" in page
    assert f'<span class="ce-num">{_dim(55 / K)}{half}≈</span>' in page and "? ambiguous: another optimum 0.040" in page
    # Captum's visualize_text: our words carry the interval as a tooltip
    ours = ex.visualize_text_records(0, "layer1")[0]
    assert f"95 % interval {low:.3f} to {high:.3f}" in ours.raw_input_ids[0]
    # the heatmap draws ± and ≈ under the numbers and says so in its legend
    fig = ex.plot("heatmap", sentence=0)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert _dim(55 / K) + "\n" + half + "≈" in texts
    assert any("95 % interval" in t.get_text() for t in fig.legends[0].get_texts())
    # saved and loaded exactly; older files (without error bars) still load, unmeasured
    ex.save(tmp_path / "ex.safetensors")
    back = LayerExplanation.load(tmp_path / "ex.safetensors")
    for name in ("log_sigma_se", "ambiguous", "ambiguity_gap"):
        assert torch.equal(getattr(back, name).nan_to_num(-1.0), getattr(ex, name).nan_to_num(-1.0)), name
    both = LayerExplanation.concat([ex, make()])
    assert torch.equal(both.take([0]).log_sigma_se.nan_to_num(-1.0), ex.take([0]).log_sigma_se.nan_to_num(-1.0))
    assert both.select(["output"]).ambiguous[0].tolist() == [True, False, False, False]
