"""captum_entropy.viz for ModelComparison (and the depth table of one LayerExplanation): the
text tables, the two figures, the HTML page (escaping, a headless-browser render), on
hand-built explanations of three models with different tokenizers, one of them truncating."""

from __future__ import annotations

import html
import io
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from captum_entropy import viz
from captum_entropy.analysis import LayerExplanation
from captum_entropy.comparison import ModelComparison, compare_models
from captum_entropy.viz import _common, figures
from captum_entropy.viz._common import _bootstrap, _dim

from .browser import render
from .test_viz import K, _pixels, make

TEXTS = ["the unbelievable film isn't great", "a dull movie"]
UNITS = [["the", "unbelievable", "film", "isn't", "great"], ["a", "dull", "movie"]]


def three_models() -> list[LayerExplanation]:
    """A WordPiece model (3 layers; layer2 not converged on sentence 0), a word-level model (2
    layers; its output not converged on sentence 0) and a model that keeps only 2 words."""
    bert = make([("[CLS] the un ##believ ##able film isn ' t great [SEP]", TEXTS[0]),
                 ("[CLS] a dull movie [SEP]", TEXTS[1])], saturated_word=(2, 0, "great"), model="bert")
    word = make([("the unbelievable film isn't great", TEXTS[0]), ("a dull movie", TEXTS[1])],
                layers=("lstm.0", "lstm.1"), not_converged=((2, 0),), saturated_word=None, model="word-lstm")
    trunc = make([("[CLS] the unbelievable [SEP]", TEXTS[0]), ("[CLS] a dull [SEP]", TEXTS[1])], layers=("conv",),
                 not_converged=(), saturated_word=None, model="cnn (2 words)")
    return [bert, word, trunc]


@pytest.fixture
def cmp() -> ModelComparison:
    return compare_models(three_models())


def shares_at_output(ex: LayerExplanation, b: int, units: list[list[int]] | None = None) -> list[float]:
    """Per unit (default: per word), its % of the units' summed kept information per dimension at
    the output, from the synthetic token values: a word reads the mean over its tokens, a unit the
    mean over its words."""
    g, fi = ex.groupings[b], ex.features.index("output")
    words = [sum(float(ex.token_kept[fi, b, p]) for p in span) / len(span) / K for span in g.spans()]
    units = units if units is not None else [[w] for w in range(len(words))]
    kept = [sum(words[w] for w in u) / len(u) for u in units]
    return [100 * k / sum(kept) for k in kept]


BERT_UNITS = [[0], [1], [2], [3, 4, 5], [6]]  # "isn", "'", "t": one unit
ISNT = "22.4"  # bert's share of "isn't" at the output, sentence 0 (a sum over its three words read 37.4)


def test_the_fixture_aligns_three_tokenizations(cmp):
    assert cmp.units == UNITS and cmp.models == ["bert", "word-lstm", "cnn (2 words)"]
    assert three_models()[0].words(0) == ["the", "unbelievable", "film", "isn", "'", "t", "great"]
    assert torch.isnan(cmp.share[2][1, 0, 2:5]).all() and torch.isnan(cmp.share[2][1, 1, 2])



@pytest.fixture(autouse=True)
def intervals_from_two_sentences(monkeypatch):
    """The hand-built explanations hold 2 sentences; the library draws an interval from 5 on
    (test_a_nearly_uniform_row_stays_pale_and_small_samples_get_no_interval checks that)."""
    monkeypatch.setattr("captum_entropy.viz._common.MIN_BOOTSTRAP", 2)

# -- tables --------------------------------------------------------------------------------------

def test_comparison_table_corpus_block(cmp):
    out = viz.comparison_table(cmp)
    lines = out.splitlines()
    assert lines[0] == "3 models, 2 sentences: corpus entropy per dimension against relative depth (low entropy = kept)"
    assert "in nats/dim" in " ".join(" ".join(lines[1:4]).split()) and all(len(x) <= 100 for x in lines)
    head = next(x for x in lines if x.startswith("model "))
    assert head.split() == ["model", "feature", "depth", "entropy", "(nats/dim)", "95", "%", "interval", "converged"]
    at = lines.index(head) + 2
    rows = [x.split() for x in lines[at:at + 9]]
    assert [r[0] for r in rows if r[0] in cmp.models] == ["bert", "word-lstm"]  # "cnn (2 words)" splits
    corpus, per_sentence = cmp.corpus_entropy(), cmp.mean_word_entropy
    with pytest.deprecated_call(match="mean_word_entropy"):
        assert cmp.sentence_entropy() == list(cmp.mean_word_entropy)
    with pytest.deprecated_call(match="mean_word_entropy"):
        assert cmp.mean_entropy is cmp.mean_word_entropy
    lo, hi = _bootstrap(per_sentence[0][1].numpy(), 2000, 0)
    assert rows[1] == ["layer2~", "0.67", _dim(float(corpus[0][1])), f"[{_dim(lo)},", f"{_dim(hi)}]", "1/2"]
    assert rows[6][:3] == ["output~", "1.25", _dim(float(corpus[1][2]))] and rows[6][-1] == "1/2"
    assert lines[at + 7].startswith("cnn (2 words) ") and lines[at + 7].split()[3:5] == ["conv", "1.00"]
    assert "~ not converged in some sentences (converged < 2)" in out


def test_comparison_table_sentence_block(cmp):
    bert, word, trunc = three_models()
    lines = viz.comparison_table(cmp).splitlines()
    at = lines.index("[0] \"the unbelievable film isn't great\"")
    assert lines[at + 1:at + 4] == ["    predicted by bert: positive (p = 0.93)",
                                    "    predicted by word-lstm: positive (p = 0.93)",
                                    "    predicted by cnn (2 words): positive (p = 0.93)"]
    head = next(x for x in lines[at:] if x.startswith("unit "))
    assert head.split() == ["unit", "bert", "word-lstm~", "cnn", "(2", "words)"]
    rows = {x.split()[0]: x.split()[1:] for x in lines[lines.index(head, at) + 2:][:5]}
    b_share, w_share, t_share = shares_at_output(bert, 0, BERT_UNITS), shares_at_output(word, 0), shares_at_output(
        trunc, 0)
    isnt = b_share[3]  # the mean of "isn", "'", "t": one unit, read like one word
    assert rows["isn't"] == [f"{isnt:.1f}", f"{w_share[3]:.1f}~", "—"] and f"{isnt:.1f}" == ISNT
    assert rows["the"] == [f"{b_share[0]:.1f}", f"{w_share[0]:.1f}~", f"{t_share[0]:.1f}"]
    assert rows["film"][2] == rows["great"][2] == "—"
    block = "\n".join(lines[at:lines.index('[1] "a dull movie"')])
    assert "~ not converged: word-lstm at output" in block and "— the model has no word in this unit" in block
    assert "(feature)" not in block  # every model has an output feature
    second = "\n".join(lines[lines.index('[1] "a dull movie"'):])
    assert "predicted by bert: negative (p = 0.71)" in second and "not converged" not in second
    assert next(x for x in second.splitlines() if x.startswith("movie ")).split()[-1] == "—"


def test_comparison_table_many_models_and_a_model_without_output():
    exs = [make([(f"[CLS] {t} [SEP]", t) for t in TEXTS], saturated_word=None, not_converged=(),
                model=f"a rather long model name {i}") for i in range(6)]
    exs.append(make([(f"[CLS] {t} [SEP]", t) for t in TEXTS], saturated_word=None, not_converged=(),
                    model="hidden only").select(["layer1", "layer2"]))
    out = viz.comparison_table(compare_models(exs))
    lines = out.splitlines()
    assert max(len(x) for x in lines) <= 100
    blocks = [x.strip() for x in lines if x.strip().startswith("models ")]
    assert blocks[:2] == ["models 1-4 of 7:", "models 5-7 of 7:"]  # per sentence
    assert "at each model's output (or last layer) feature" in " ".join(out.split())
    feature_row = next(x for x in lines if x.startswith("(feature)") and "layer2" in x)
    assert feature_row.split() == ["(feature)", "output", "output", "layer2"]


def test_depth_table():
    ex = three_models()[0]
    out = viz.depth_table(ex)
    lines = out.splitlines()
    assert lines[0] == "bert: entropy against depth over 2 sentences (low entropy = kept)"
    assert all(len(x) <= 100 for x in lines)
    assert f"({K} dims; each word the mean over its pieces), nats/dim" in " ".join(out.split())
    head = next(x for x in lines if x.startswith("feature "))
    assert "entropy (nats/dim)" in head and "kept (nats/dim)" in head and "converged" in head
    rows = [x.split() for x in lines[lines.index(head) + 2:][:4]]
    assert [r[0] for r in rows] == ["layer1", "layer2~", "layer3", "output"]
    mean_entropy = ex.mean_word_entropy()
    lo, hi = _bootstrap(mean_entropy[3].numpy(), 2000, 0)
    kept = np.mean([float(ex.word_kept(b)[3].mean()) for b in range(2)])
    assert kept == pytest.approx(float(ex.mean_word_kept()[3].mean()))
    assert rows[3] == ["output", "1.25", _dim(float(ex.corpus_entropy()[3])), f"[{_dim(lo)},", f"{_dim(hi)}]",
                       _dim(kept), "2/2"]
    assert rows[1][-1] == "1/2" and "~ not converged in some sentences" in out
    bits = viz.depth_table(ex, unit="bits")
    assert "entropy (bits/dim)" in bits and "kept (bits/dim)" in bits
    row = next(x for x in bits.splitlines() if x.startswith("output "))
    assert row.split()[2] == _dim(float(ex.corpus_entropy("bits")[3]))
    # rows go by depth, whatever the order of the features; one sentence: no interval
    one = make([("[CLS] a dull movie [SEP]", "a dull movie")], saturated_word=None).select(["output", "layer1"])
    table = viz.depth_table(one).splitlines()
    at = next(i for i, x in enumerate(table) if x.startswith("feature "))
    assert [x.split()[0] for x in table[at + 2:at + 4]] == ["layer1", "output"]
    assert table[at + 2].split()[3] == "n/a" and "n/a: an interval needs at least 2 sentences" in table
    with pytest.raises(ValueError, match="unit"):
        viz.depth_table(ex, unit="bans")


def test_show_and_a_saved_comparison(cmp, tmp_path):
    buf = io.StringIO()
    cmp.show(file=buf)
    assert buf.getvalue() == viz.comparison_table(cmp) + "\n"
    cmp.save(tmp_path / "c.safetensors")
    assert viz.comparison_table(ModelComparison.load(tmp_path / "c.safetensors")) == viz.comparison_table(cmp)


def test_a_comparison_saved_with_summed_units_is_refused(cmp, tmp_path):
    from captum_entropy._io import load_tensors, save_tensors

    cmp.save(tmp_path / "c.safetensors")
    tensors, meta = load_tensors(tmp_path / "c.safetensors")
    save_tensors(tmp_path / "old.safetensors", tensors, {**meta, "format": "captum_entropy.ModelComparison/1"})
    with pytest.raises(ValueError, match="older captum_entropy whose units read sums"):
        ModelComparison.load(tmp_path / "old.safetensors")


def test_one_bootstrap():
    assert figures._bootstrap is _common._bootstrap  # the tables, the figures and the page share it


# -- figures -------------------------------------------------------------------------------------

def test_depth_figure(cmp, tmp_path):
    pytest.importorskip("matplotlib")
    fig = viz.plot_comparison(cmp, "depth")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "relative depth (layer l of N at l/N; the prediction at 1.25)"
    assert ax.get_ylabel() == "corpus entropy per dimension (nats/dim)\nlow = kept"
    lines = [line for line in ax.get_lines() if line.get_linewidth() > 2]
    assert len(lines) == 3
    for m, line in enumerate(lines):
        assert list(line.get_xdata()) == pytest.approx(cmp.depth[m])
        assert line.get_ydata() == pytest.approx(cmp.corpus_entropy()[m].numpy(), rel=1e-6)
    assert [t.get_text() for t in ax.get_xticklabels()][-1] == "output" and ax.get_xticks()[-1] == 1.25
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["bert (4 features)", "word-lstm (3 features)", "cnn (2 words) (2 features)",
                      "95 % bootstrap interval over sentences", "not converged in some sentence"]
    assert len([c for c in ax.collections if type(c).__name__ in ("PolyCollection", "FillBetweenPolyCollection")]) == 3
    rings = [c for c in ax.collections if c.get_offsets().shape[0] and type(c).__name__ == "PathCollection"]
    assert sorted(map(tuple, np.concatenate([r.get_offsets() for r in rings]).round(2).tolist())) == [
        (0.67, round(float(cmp.corpus_entropy()[0][1]), 2)), (1.25, round(float(cmp.corpus_entropy()[1][2]), 2))]
    _pixels(Path(viz.save_figure(fig, tmp_path / "depth.png")))
    assert cmp.plot("depth", seed=1, n_resamples=200).axes[0].get_ylabel() == ax.get_ylabel()


def test_words_figure(cmp, tmp_path):
    pytest.importorskip("matplotlib")
    fig = cmp.plot("words", sentence=0)
    ax, bar = fig.axes[0], fig.axes[-1]
    assert [t.get_text() for t in ax.get_xticklabels()] == UNITS[0]
    assert ax.get_xlabel().startswith("word unit") and ax.get_ylabel() == "model"
    assert bar.get_ylabel() == "share of the sentence's kept information\nper dimension (%)"
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows[0] == "bert\noutput · positive (p = 0.93)" and rows[1].startswith("word-lstm (not converged)\n")
    data = ax.get_images()[0].get_array()
    assert data.shape == (3, 5) and data.mask[2].tolist() == [False, False, True, True, True]
    assert data[0].filled(np.nan).tolist() == pytest.approx((cmp.share[0][3, 0, :5] * 100).tolist(), rel=1e-5)
    assert data[1].filled(np.nan).tolist() == pytest.approx(shares_at_output(three_models()[1], 0), rel=1e-5)
    texts = [t.get_text() for t in ax.texts]
    assert texts.count("—") == 3 and ISNT in texts and len(texts) == 15
    assert len([p for p in ax.patches if p.get_hatch() == "///"]) == 5  # the not-converged row, cell by cell
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend[:2] == ["not converged (approximate)",
                          "— grey: no word of this model here (it truncated the sentence)"]
    assert "each model's output" in fig.get_suptitle() and "isn't great" in fig.get_suptitle()
    img = _pixels(Path(viz.save_figure(fig, tmp_path / "words.png")))
    assert np.all(np.abs(img * 255 - 196) < 3, axis=-1).sum() > 1000  # the grey "no word" cells
    # sentence 1: everything converged; only the truncated model's last unit is grey
    one = cmp.plot("words", 1)
    assert [t.get_text() for t in one.axes[0].texts].count("—") == 1 and not any(
        p.get_hatch() for p in one.axes[0].patches)
    assert "not converged (approximate)" not in [t.get_text() for t in one.legends[0].get_texts()]


def test_words_figure_feature_long_sentences_and_errors(cmp):
    pytest.importorskip("matplotlib")
    words = " ".join(f"w{i}" for i in range(45))
    same = [make([(f"[CLS] {words} [SEP]", words)], saturated_word=None, not_converged=(), model=m) for m in "ab"]
    two = compare_models(same)
    fig = two.plot("words", feature="layer1")
    panels = [a for a in fig.axes if a.get_images()]
    assert len(panels) == 2 and [len(a.get_xticklabels()) for a in panels] == [23, 22] and not panels[0].texts
    assert panels[0].get_images()[0].get_array()[0].filled(np.nan).tolist() == pytest.approx(
        (two.share[0][0, 0, :23] * 100).tolist(), rel=1e-5)
    assert "each model's layer1" in fig.get_suptitle() and fig.get_size_inches()[0] <= 20
    with pytest.raises(KeyError, match="word-lstm has no feature 'layer1'"):
        cmp.plot("words", feature="layer1")
    with pytest.raises(ValueError, match="'depth', 'words'"):
        viz.plot_comparison(cmp, "heatmap")
    with pytest.raises(IndexError, match="this comparison has 2 sentences"):
        cmp.plot("words", sentence=2)


# -- HTML ----------------------------------------------------------------------------------------

NASTY = "<script>alert(1)</script> \"quotes\" a&b $5"


def nasty() -> ModelComparison:
    common = dict(label_names=("<b>neg</b>", 'pos"itive'), saturated_word=None)
    bert = make([("[CLS] <script>alert(1)</script> \"quotes\" a& ##b $5 [SEP]", NASTY),
                 ("[CLS] a dull movie [SEP]", TEXTS[1])], model='bert<1>&"x"', **common)
    word = make([(NASTY, NASTY), ("a dull movie", TEXTS[1])], layers=("lstm&0", "lstm.1"), not_converged=((2, 0),),
                model="word 'lvl' & <b>co</b>", **common)
    trunc = make([("[CLS] <script>alert(1)</script> [SEP]", NASTY), ("[CLS] a dull [SEP]", TEXTS[1])],
                 layers=("conv",), not_converged=(), model="cnn", **common)
    return compare_models([bert, word, trunc])


def test_html_escapes_everything():
    c = nasty()
    assert c.units[0] == ["<script>alert(1)</script>", '"quotes"', "a&b", "$5"]
    page = c.to_html(title="<title>x</title>")
    assert "<script" not in page.lower() and "alert(1)</" not in page
    assert "<b>co</b>" not in page and "<b>neg</b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&quot;quotes&quot;" in page and "a&amp;b" in page
    assert "bert&lt;1&gt;&amp;&quot;x&quot;" in page and "word &#x27;lvl&#x27; &amp; &lt;b&gt;co&lt;/b&gt;" in page
    assert "lstm&amp;0" in page and "&lt;title&gt;x&lt;/title&gt;" in page and "pos&quot;itive (p = 0.93)" in page
    for title in re.findall(r'title="([^"]*)"', page):  # attributes hold no raw < > &
        assert "<" not in title and ">" not in title and not re.search(r"&(?!amp;|lt;|gt;|quot;|#x27;)", title)
    table = viz.comparison_table(c)  # plain text: as it is
    assert "<script>alert(1)</script>" in table and 'bert<1>&"x"' in table
    pytest.importorskip("matplotlib")
    fig = c.plot("words")
    assert r"\$5" in [t.get_text() for t in fig.axes[0].get_xticklabels()]  # no mathtext
    fig.canvas.draw()


def test_html_structure_marks_and_values(cmp, tmp_path):
    page = viz.comparison_html(cmp)
    assert page.startswith("<!doctype html>") and '<meta charset="utf-8">' in page
    assert "http" not in page.replace('http-equiv="Content-Security-Policy"', "")  # nothing external
    assert "<h1>bert vs word-lstm vs cnn (2 words): what each model keeps of each word</h1>" in page
    assert "nats/dim" in page and "share (%) of the kept information" in page and "darker = more kept" in page
    depth = page.split('<table class="ce-grid ce-depth">')[1].split("</table>")[0]
    assert depth.count("<tr") == 1 + 4 + 3 + 2 and depth.count('rowspan="4"') == 1
    assert len(re.findall(r'<tr class="[^"]*\bce-nc\b', depth)) == 2 and depth.count(">1/2</td>") == 2
    assert f'>{_dim(float(cmp.corpus_entropy()[0][3]))}</td>' in depth
    sentences = page.split('<section class="ce-sentence">')[1:]
    assert len(sentences) == 2 and "<h2>1. the unbelievable film isn&#x27;t great</h2>" in sentences[0]
    first = sentences[0]
    assert first.count('<td class="ce-none"') == 3 and sentences[1].count('<td class="ce-none"') == 1
    assert first.count('<tr class="ce-nc">') == 1 and "~ not converged</span>" in first
    assert '<th scope="col">isn&#x27;t</th>' in first and f">{ISNT}</td>" in first
    assert "bert: positive (p = 0.93)" in first and "5 word units" in first
    assert 'rgb(8,48,107);color:#fff"' in first  # the sentence's largest share: darkest
    assert f"isn&#x27;t · bert at output: {ISNT} % of the kept information per dimension" in first
    fragment = cmp.to_html(full_page=False)
    assert fragment.startswith("<style>") and "<html" not in fragment
    path = cmp.save_html(tmp_path / "out" / "report.html")
    assert Path(path).read_text(encoding="utf-8") == page


def test_long_sentence_html_wraps_into_balanced_tables():
    words = " ".join(f"word{i:02d}" for i in range(40))
    same = [make([(f"[CLS] {words} [SEP]", words)], saturated_word=None, model=m) for m in "ab"]
    page = compare_models(same).to_html()
    tables = page.split('<section class="ce-sentence">')[1].split('<table class="ce-grid">')[1:]
    widths = [t.split("</thead>")[0].count('<th scope="col">') for t in tables]
    assert widths == [10, 10, 10, 10]  # 13 would fit in 780 px, but 13, 13, 13, 1 leaves one alone


def test_repr_html_is_a_fragment():
    ex = make()
    assert ex._repr_html_() == viz.explanation_html(ex, full_page=False) and "<html" not in ex._repr_html_()


def test_html_renders_in_headless_chromium(tmp_path):
    page = tmp_path / "page.html"
    c = nasty()
    viz.write_text(page, c.to_html())
    dom, shot = render(page, tmp_path)
    assert "<script" not in dom.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in dom
    title = re.search(r"<title>(.*?)</title>", dom).group(1)
    assert html.unescape(title) == "bert<1>&\"x\" vs word 'lvl' & <b>co</b> vs cnn: what each model keeps of each word"
    assert dom.count('<td class="ce-w') == c.to_html().count('<td class="ce-w')
    assert dom.count('<td class="ce-none"') == 3 + 1
    pytest.importorskip("matplotlib")
    img = _pixels(shot)
    assert img.shape[:2] == (1400, 1000)
    dark_blue = np.all(np.abs(img * 255 - np.array([8, 48, 107])) < 12, axis=-1)
    grey = np.all(np.abs(img * 255 - 196) < 4, axis=-1)
    assert dark_blue.sum() > 200 and grey.sum() > 200  # the largest shares and the "no word" cells are painted
