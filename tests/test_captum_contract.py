"""Captum conventions: shapes, log_usage, targets, hooks, and the model left as it was."""

import pytest
import torch
from captum.attr import LayerIntegratedGradients
from captum.testing.helpers.basic_models import BasicEmbeddingModel
from torch import nn

from captum_entropy import EntropyAttribution

from .invariants import snapshot
from .tiny_models import LinearMap, bert_logits, tiny_bert

FAST = dict(max_steps=30)


def test_shape_parity_with_layer_integrated_gradients_on_captum_model():
    torch.manual_seed(0)
    model = BasicEmbeddingModel(nested_second_embedding=True).eval()
    input1 = torch.randint(0, 30, (3, 7))
    input2 = torch.randint(0, 30, (3, 7))
    ours = EntropyAttribution(model, model.embedding1).attribute(input1, additional_forward_args=(input2,), **FAST)
    lig = LayerIntegratedGradients(model, model.embedding1).attribute(input1, additional_forward_args=(input2,))
    assert ours.shape == lig.shape == (3, 7, 100)
    assert torch.isfinite(ours).all()


def test_shape_parity_with_layer_integrated_gradients_on_tiny_bert(bert, bert_batch):
    ids, mask = bert_batch
    f = bert_logits(bert)
    ours = EntropyAttribution(f, bert.bert.embeddings).attribute(
        ids, target=1, additional_forward_args=(mask,), mask=mask, **FAST
    )
    lig = LayerIntegratedGradients(f, bert.bert.embeddings).attribute(
        ids, target=1, additional_forward_args=(mask,), n_steps=5
    )
    assert ours.shape == lig.shape and ours.dtype == lig.dtype
    assert (ours[mask == 0] == 0).all() and torch.isfinite(ours).all()


def test_captum_interface():
    from captum.attr._utils.attribution import LayerAttribution, PerturbationAttribution

    model = LinearMap(4, 3, 2)
    ea = EntropyAttribution(model, model.emb)
    assert isinstance(ea, LayerAttribution) and isinstance(ea, PerturbationAttribution)
    assert ea.multiplies_by_inputs is False
    assert hasattr(EntropyAttribution.attribute, "__wrapped__")  # decorated by captum's log_usage
    import inspect

    assert "baselines" not in inspect.signature(ea.attribute).parameters


def test_target_selects_one_output_like_captum():
    # linear logits: with target=k only row k of the map matters, so σ follows that row alone
    tokens, dims, out = 4, 6, 3
    model = LinearMap(tokens, dims, out)
    x = torch.randn(2, tokens, dims)
    ea = EntropyAttribution(model, model.emb)
    for target in (1, [2, 0], torch.tensor([0, 1])):
        res = ea.attribute_result(x, target=target, feature_std=torch.ones(out), max_sigma=100.0, max_steps=1)
        ks = [target] * 2 if isinstance(target, int) else list(map(int, target))
        for b, k in enumerate(ks):
            jsq = (model.A[k].reshape(tokens, dims) ** 2).sum(-1)  # M = 1 for a selected scalar
            assert torch.allclose(res.init_sigma[b, :, 0], torch.sqrt(0.05 / (tokens * jsq)), rtol=1e-4)


def test_target_layer_list_gives_one_independent_result_per_layer(bert, bert_batch):
    ids, mask = bert_batch
    f = bert_logits(bert)
    layers = list(bert.bert.encoder.layer)
    both = EntropyAttribution(f, bert.bert.embeddings, target_layer=layers).attribute(
        ids, additional_forward_args=(mask,), mask=mask, **FAST
    )
    assert isinstance(both, list) and len(both) == 2
    for layer, got in zip(layers, both):
        alone = EntropyAttribution(f, bert.bert.embeddings, target_layer=layer).attribute(
            ids, additional_forward_args=(mask,), mask=mask, **FAST
        )
        assert torch.equal(torch.nan_to_num(alone), torch.nan_to_num(got))


def test_forward_stops_after_the_target_layer(bert, bert_batch):
    ids, mask = bert_batch
    calls = []
    handle = bert.classifier.register_forward_hook(lambda *a: calls.append(1))
    try:
        EntropyAttribution(bert_logits(bert), bert.bert.embeddings, target_layer=bert.bert.encoder.layer[0]).attribute(
            ids, additional_forward_args=(mask,), mask=mask, **FAST
        )
    finally:
        handle.remove()
    assert calls == []


class KeywordBlock(nn.Module):
    """A model whose inner block is called with keyword arguments only (as HF models do)."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.block = nn.Linear(6, 6)
        self.head = nn.Linear(6, 2)

    def forward(self, ids):
        return self.head(torch.tanh(self.block_call(hidden_states=self.emb(ids))).mean(1))

    def block_call(self, hidden_states):
        return self.block(input=hidden_states)


def test_noise_on_layer_input_works_with_keyword_calls():
    torch.manual_seed(0)
    model = KeywordBlock().eval()
    ids = torch.randint(0, 20, (2, 5))
    std = torch.ones(2)
    on_output = EntropyAttribution(model, model.emb).attribute_result(ids, feature_std=std, max_sigma=3.0, **FAST)
    on_input = EntropyAttribution(model, model.block).attribute_result(
        ids, feature_std=std, max_sigma=3.0, attribute_to_layer_input=True, **FAST
    )
    assert torch.allclose(on_output.sigma, on_input.sigma, rtol=1e-5)


def test_model_untouched_and_dropout_off_during_the_run(bert_batch):
    ids, mask = bert_batch
    model = tiny_bert(dropout=0.5).train()
    model.classifier.weight.grad = torch.ones_like(model.classifier.weight)
    model.bert.pooler.dense.weight.requires_grad_(False)
    before = snapshot(model)
    f = bert_logits(model)
    trained = EntropyAttribution(f, model.bert.embeddings).attribute_result(ids, additional_forward_args=(mask,), mask=mask, **FAST)
    before.assert_unchanged()
    model.eval()
    evaluated = EntropyAttribution(f, model.bert.embeddings).attribute_result(ids, additional_forward_args=(mask,), mask=mask, **FAST)
    assert torch.equal(torch.nan_to_num(trained.sigma), torch.nan_to_num(evaluated.sigma))  # dropout was off


def test_model_untouched_after_an_exception_mid_run(bert_batch):
    ids, mask = bert_batch
    model = tiny_bert().train()
    before = snapshot(model)
    calls = [0]

    def flaky(i, a):
        calls[0] += 1
        if calls[0] == 5:
            raise RuntimeError("boom")
        return model(input_ids=i, attention_mask=a).logits

    with pytest.raises(RuntimeError, match="boom"):
        EntropyAttribution(flaky, model.bert.embeddings).attribute(ids, additional_forward_args=(mask,), mask=mask, **FAST)
    before.assert_unchanged()
