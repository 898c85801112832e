"""The zoo's models behind one interface (fast: tiny sizes, the repo's 40 sentences)."""

from pathlib import Path

import pytest
import torch

from captum_entropy import EntropyAttribution
from captum_entropy.zoo import MODEL_NAMES, build, from_hf_classifier, load, save_model
from captum_entropy.zoo.data import Example
from captum_entropy.zoo.training import TrainConfig, accuracy, fit

SENTENCES = (Path(__file__).parents[1] / "captum_entropy" / "data" / "sentences.txt").read_text().splitlines()
LABELS = [1 - i % 2 for i in range(len(SENTENCES))]  # the bundled sentences alternate positive / negative
TINY = dict(dim=12, hidden=16, filters=8, layers=2, heads=2)
WORD_MODELS = [n for n in MODEL_NAMES if n != "minilm"]


@pytest.fixture(autouse=True)
def tmp_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CAPTUM_ENTROPY_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("name", WORD_MODELS)
def test_word_models_share_one_interface_and_ignore_padding(name):
    zm = build(name, SENTENCES, glove=False, config=TINY)
    ids, mask = zm.tokenize(SENTENCES[:4])
    assert (mask.sum(1) < ids.shape[1]).any()  # some rows are padded
    logits = zm.forward(ids, mask)
    assert logits.shape == (4, 2) and zm.label_names == ("negative", "positive")
    for b in range(4):  # a padded row gives the same logits as the row alone
        n = int(mask[b].sum())
        alone = zm.forward(ids[b : b + 1, :n], mask[b : b + 1, :n])
        assert torch.allclose(alone, logits[b : b + 1], atol=1e-5), (name, b)
    assert zm.tokens(ids[0]) == SENTENCES[0].split()
    for layer in zm.layers.values():
        store = []
        h = layer.register_forward_hook(lambda m, a, o: store.append(o))
        try:
            zm.forward(ids, mask)
        finally:
            h.remove()
        assert store[0].shape[:2] == ids.shape  # per-token hidden layers


@pytest.mark.parametrize("name", WORD_MODELS)
def test_entropy_attribution_runs_on_every_layer_of_every_word_model(name):
    zm = build(name, SENTENCES, glove=False, config=TINY)
    ids, mask = zm.tokenize(SENTENCES[:3])
    ea = EntropyAttribution(zm.forward, zm.embedding, target_layer=list(zm.layers.values()))
    results = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, max_steps=20)
    assert len(results) == len(zm.layers)
    for res in results:
        assert torch.isfinite(res.token_entropy[mask.bool()]).all()
        assert torch.isnan(res.token_entropy[~mask.bool()]).all()
    out = EntropyAttribution(zm.forward, zm.embedding).attribute(ids, target=1, additional_forward_args=(mask,), mask=mask, max_steps=20)
    assert out.shape == (*ids.shape, TINY["dim"])


@pytest.mark.parametrize("name", WORD_MODELS)
def test_training_fits_the_bundled_sentences_and_checkpoints_round_trip(name, tmp_path):
    zm = build(name, SENTENCES, glove=False, config=TINY)
    losses = fit(zm.model, zm.forward, zm.tokenize, SENTENCES, LABELS, TrainConfig(epochs=15, lr=1e-2, batch_size=8), progress=False)
    assert losses[-1] < losses[0]
    assert accuracy(zm.forward, zm.tokenize, SENTENCES, LABELS) > 0.8  # memorises 40 sentences
    zm.meta["test_accuracy"] = 0.5
    path = save_model(zm, tmp_path / f"{name}.safetensors")
    back = load(name, path=path, train_if_missing=False)
    ids, mask = zm.tokenize(SENTENCES[:5])
    assert torch.equal(back.forward(ids, mask), zm.forward(ids, mask))
    assert back.test_accuracy == 0.5 and list(back.layers) == list(zm.layers)


def test_the_training_bar_shows_the_loss_of_the_latest_steps(monkeypatch):
    """An epoch of fewer than 100 steps (minilm's: 3200 sentences / 32) still updates ``loss=``."""
    import tqdm.auto

    from captum_entropy.zoo.training import optimize

    shown: list[float] = []

    class Bar(tqdm.auto.tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            shown.append(float(kwargs["loss"]))
            return super().set_postfix(ordered_dict, refresh, **kwargs)

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    model = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    xs = [torch.tensor([[1.0], [2.0]])] * 50
    log = optimize(model, lambda x: (model(x) - 3 * x).pow(2).mean(), lambda epoch: xs, epochs=1, lr=0.1,
                   progress=True)
    assert len(shown) == len(log.steps) == 50
    assert shown[-1] == pytest.approx(sum(log.steps) / 50, abs=1e-4) and len(set(shown)) == 50  # a running mean


def test_missing_checkpoint_and_unknown_names_give_clear_errors():
    with pytest.raises(FileNotFoundError, match="captum-entropy train lstm"):
        load("lstm", train_if_missing=False)
    with pytest.raises(ValueError, match="unknown zoo model"):
        build("gpt")


def test_a_users_hf_classifier_plugs_in(tmp_path):
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizer

    words = sorted({w for s in SENTENCES for w in s.replace(",", " ").replace(".", " ").split()})
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ",", ".", *words]))
    tok = BertTokenizer(str(vocab))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(words) + 7, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=32, max_position_embeddings=64)
    zm = from_hf_classifier(BertForSequenceClassification(cfg), tok, label_names=["neg", "pos"])
    ids, mask = zm.tokenize(SENTENCES[:2])
    assert zm.tokens(ids[0])[:3] == ["[CLS]", "rare", "bird"]
    assert list(zm.layers) == ["layer1", "layer2"] and zm.forward(ids, mask).shape == (2, 2)
    res = EntropyAttribution(zm.forward, zm.embedding, target_layer=zm.layers["layer2"]).attribute_result(
        ids, additional_forward_args=(mask,), mask=mask, max_steps=10)
    assert res.token_entropy.shape == ids.shape


def test_example_is_a_plain_record():
    assert Example("good", 1).label == 1
