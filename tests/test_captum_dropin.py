"""Code written for LayerIntegratedGradients runs unchanged with EntropyAttribution.

One test per thing a Captum user does: orientation, no_grad, the attention mask where Captum
users put it, Captum's wrappers (NoiseTunnel) and metrics (infidelity, sensitivity_max),
visualisers, convergence deltas, dtypes, targets, and the errors for keywords of other methods.
"""

import pytest
import torch
from captum.attr import LayerAttribution, LayerIntegratedGradients, NoiseTunnel
from captum.attr import visualization as viz
from torch import nn

from captum_entropy import EntropyAttribution

from .invariants import snapshot
from .tiny_models import LinearMap, bert_logits

FAST = dict(max_steps=20)


class EmbedsModel(nn.Module):
    """A tiny BERT fed with embeddings (float inputs, as NoiseTunnel and the metrics need)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert
        self.inp = nn.Identity()  # the layer: the embeddings the caller passes in

    def forward(self, embeds, attention_mask):
        return self.bert(inputs_embeds=self.inp(embeds), attention_mask=attention_mask).logits


def test_attributions_are_kept_information_high_means_important():
    # linear logits: the word with the largest Jacobian norm keeps the most, and every value is ≥ 0
    model = LinearMap(tokens=4, dims=3, out=2)
    x = torch.randn(2, 4, 3)
    ea = EntropyAttribution(model, model.emb)
    attr = ea.attribute(x, target=0, feature_std=torch.ones(2), **FAST)
    res = ea.attribute_result(x, target=0, feature_std=torch.ones(2), **FAST)
    assert (attr >= 0).all()
    jac = (model.A[0].reshape(4, 3) ** 2).sum(-1)
    assert torch.equal(attr.sum(-1).argmax(-1), torch.full((2,), int(jac.argmax())))
    # kept = entropy at the cap − entropy, element by element
    h_cap = res.max_token_entropy / res.n_dims
    assert torch.allclose(attr, h_cap[:, None, None] - res.entropy, atol=1e-5)
    entropy = ea.attribute(x, target=0, feature_std=torch.ones(2), quantity="entropy", **FAST)
    assert torch.allclose(entropy, res.entropy)


def test_padding_is_zero_and_summaries_have_no_nan(bert, bert_batch):
    ids, mask = bert_batch
    attr = EntropyAttribution(bert_logits(bert), bert.bert.embeddings).attribute(
        ids, target=1, additional_forward_args=(mask,), **FAST
    )
    assert torch.isfinite(attr).all() and (attr[mask == 0] == 0).all() and (attr[mask == 1] >= 0).all()
    # Captum's BERT tutorial: summarize_attributions, then visualize_text
    summary = attr.sum(-1)
    summary = summary / torch.norm(summary, dim=-1, keepdim=True)
    assert torch.isfinite(summary).all()
    record = viz.VisualizationDataRecord(
        summary[0], 0.9, 1, 1, "1", summary[0].sum(), [str(int(i)) for i in ids[0]], 0.0
    )
    html = viz.visualize_text([record])
    assert "hsl(120" in html.data  # positive scores are drawn green, as for an important word


def test_attributions_are_contiguous_and_writable(bert, bert_batch):
    ids, mask = bert_batch
    attr = EntropyAttribution(bert_logits(bert), bert.bert.embeddings).attribute(
        ids, additional_forward_args=(mask,), **FAST
    )
    assert attr.is_contiguous()
    attr /= attr.norm()
    assert attr.view(4, -1).shape == (4, 9 * 16)


def test_works_inside_no_grad_and_leaves_the_model_as_it_was(bert, bert_batch):
    ids, mask = bert_batch
    bert.train()
    before = snapshot(bert)
    with torch.no_grad():
        attr = EntropyAttribution(bert_logits(bert), bert.bert.embeddings).attribute(
            ids, target=0, additional_forward_args=(mask,), **FAST
        )
        assert not torch.is_grad_enabled()  # the caller's no_grad is still in force after the call
    assert torch.isfinite(attr).all()
    before.assert_unchanged()  # weights, .grad (still None), requires_grad, training flags, hooks
    assert bert.training and all(p.grad is None for p in bert.parameters())


def test_attention_mask_in_additional_forward_args_equals_an_explicit_mask(bert, bert_batch):
    ids, mask = bert_batch
    ea = EntropyAttribution(bert_logits(bert), bert.bert.embeddings, target_layer=bert.bert.encoder.layer[1])
    found = ea.attribute_result(ids, additional_forward_args=(mask,), **FAST)
    given = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, **FAST)
    assert torch.equal(found.mask, mask.bool()) and found.settings["mask"] == "detected: additional_forward_args[0]"
    real = mask.bool()
    assert torch.equal(found.sigma[real], given.sigma[real])


def test_a_mask_the_model_does_not_honour_is_not_used(bert, bert_batch):
    # the model ignores its second argument: the padding positions are read, so they are real tokens
    ids, mask = bert_batch
    ignores_mask = lambda ids, am: bert(input_ids=ids).logits  # noqa: E731
    res = EntropyAttribution(ignores_mask, bert.bert.embeddings).attribute_result(ids, additional_forward_args=(mask,), **FAST)
    assert res.mask.all() and res.settings["mask"] == "none"


def test_token_type_ids_are_not_taken_for_a_mask(bert, bert_batch):
    ids, mask = bert_batch
    types = torch.zeros_like(ids)
    types[:, 5:] = 1  # a second segment: looks like left padding, but the model reads those tokens

    def forward(ids, token_type_ids, attention_mask):
        return bert(input_ids=ids, token_type_ids=token_type_ids, attention_mask=attention_mask).logits

    res = EntropyAttribution(forward, bert.bert.embeddings).attribute_result(ids, additional_forward_args=(types, mask), **FAST)
    assert torch.equal(res.mask, mask.bool())


@pytest.mark.parametrize("nt_type", ["smoothgrad", "smoothgrad_sq", "vargrad"])
def test_noise_tunnel_keeps_the_mask_aligned_with_the_repeated_batch(bert, bert_batch, nt_type):
    ids, mask = bert_batch
    model = EmbedsModel(bert)
    with torch.no_grad():
        embeds = bert.bert.embeddings.word_embeddings(ids)
    nt = NoiseTunnel(EntropyAttribution(model, model.inp))
    attr = nt.attribute(
        embeds, nt_type=nt_type, nt_samples=3, nt_samples_batch_size=2, stdevs=0.01, target=1,
        additional_forward_args=(mask,), **FAST,
    )
    assert attr.shape == embeds.shape and torch.isfinite(attr).all()
    assert (attr[mask == 0] == 0).all()


def test_explicit_mask_under_a_wrapper_says_how_to_pass_it(bert, bert_batch):
    ids, mask = bert_batch
    model = EmbedsModel(bert)
    with torch.no_grad():
        embeds = bert.bert.embeddings.word_embeddings(ids)
    nt = NoiseTunnel(EntropyAttribution(model, model.inp))
    with pytest.raises(ValueError, match="additional_forward_args instead"):
        nt.attribute(embeds, nt_samples=2, stdevs=0.01, additional_forward_args=(mask,), mask=mask, **FAST)


def test_captum_metrics_run_on_entropy_attributions(bert, bert_batch):
    from captum.metrics import infidelity, sensitivity_max

    ids, mask = bert_batch
    model = EmbedsModel(bert)
    with torch.no_grad():
        embeds = bert.bert.embeddings.word_embeddings(ids)
    ea = EntropyAttribution(model, model.inp)
    attr = ea.attribute(embeds, target=1, additional_forward_args=(mask,), **FAST)

    def perturb(inputs):
        noise = torch.randn_like(inputs) * 0.01
        return noise, inputs - noise

    infid = infidelity(model, perturb, embeds, attr, additional_forward_args=(mask,), target=1, n_perturb_samples=2)
    # sensitivity_max expects a tuple of attributions back, as from an input method: a layer method
    # (LayerIntegratedGradients too) is wrapped to return one
    sens = sensitivity_max(
        lambda inputs, **kw: (ea.attribute(inputs, **kw),), embeds, perturb_radius=0.01, n_perturb_samples=2,
        target=1, additional_forward_args=(mask,), **FAST,
    )
    assert infid.shape == sens.shape == (4,) and torch.isfinite(infid).all() and torch.isfinite(sens).all()


def test_interpolate_where_shapes_allow(bert, bert_batch):
    ids, mask = bert_batch
    attr = EntropyAttribution(bert_logits(bert), bert.bert.embeddings).attribute(
        ids, additional_forward_args=(mask,), **FAST
    )
    assert LayerAttribution.interpolate(attr, (32,)).shape == (4, 9, 32)


def test_return_convergence_delta_is_the_stationarity_per_example(bert, bert_batch):
    ids, mask = bert_batch
    ea = EntropyAttribution(bert_logits(bert), bert.bert.embeddings)
    assert ea.has_convergence_delta()
    attr, delta = ea.attribute(ids, additional_forward_args=(mask,), return_convergence_delta=True, **FAST)
    res = ea.attribute_result(ids, additional_forward_args=(mask,), **FAST)
    assert delta.shape == (4,) and torch.equal(delta, res.stationarity)
    _, lin = ea.attribute(ids, additional_forward_args=(mask,), return_convergence_delta=True, method="linearized")
    assert torch.isnan(lin).all()  # no optimisation ran: the distance to the optimum is unknown


def test_float64_model_gives_float64_attributions():
    model = LinearMap(tokens=3, dims=4, out=2).double()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    attr = EntropyAttribution(model, model.emb).attribute(x, feature_std=torch.ones(2), **FAST)
    lig = LayerIntegratedGradients(model, model.emb).attribute(x, target=0)
    assert attr.dtype == lig.dtype == torch.float64


def test_a_class_target_with_a_per_token_target_layer_is_an_error_showing_both_readings(bert, bert_batch):
    ids, mask = bert_batch
    ea = EntropyAttribution(bert_logits(bert), bert.bert.embeddings, target_layer=bert.bert.encoder.layer[0])
    with pytest.raises(ValueError, match="token position") as err:
        ea.attribute(ids, target=1, additional_forward_args=(mask,), **FAST)
    assert "target_layer=None" in str(err.value) and "target=(3,)" in str(err.value)
    # an explicit position (a tuple) is fine
    assert ea.attribute(ids, target=(1,), additional_forward_args=(mask,), **FAST).shape == (4, 9, 16)


@pytest.mark.parametrize(
    "keyword, hint", [("baselines", "needs no baseline"), ("n_steps", "max_steps"), ("stdevs", "NoiseTunnel")]
)
def test_keywords_of_other_captum_methods_say_what_to_use_instead(keyword, hint):
    model = LinearMap(tokens=3, dims=4, out=2)
    with pytest.raises(TypeError, match=hint):
        EntropyAttribution(model, model.emb).attribute(torch.randn(1, 3, 4), **{keyword: 1})


def test_integration_rule_of_ig_in_method_is_explained():
    model = LinearMap(tokens=3, dims=4, out=2)
    with pytest.raises(ValueError, match="integration rule"):
        EntropyAttribution(model, model.emb).attribute(torch.randn(1, 3, 4), method="gausslegendre")


def test_a_layer_called_twice_per_forward_is_an_error():
    emb = nn.Embedding(10, 4)
    shared = lambda a, b: (emb(a) + emb(b)).sum((1, 2))  # noqa: E731  one module, two calls
    with pytest.raises(ValueError, match="called 2 times"):
        EntropyAttribution(shared, emb).attribute(torch.randint(0, 10, (2, 3)), additional_forward_args=(
            torch.randint(0, 10, (2, 3)),), **FAST)


class TiedLM(nn.Module):
    """A language model whose output projection shares the embedding matrix (as GPT-2, BERT's MLM head)."""

    def __init__(self, vocab: int = 12, dim: int = 6) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.emb = nn.Embedding(vocab, dim)
        self.emb.weight.data = torch.randn(vocab, dim, generator=g)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight  # tied

    def forward(self, ids):
        return self.head(torch.tanh(self.mix(self.emb(ids))).mean(1))


def test_a_tied_embedding_is_explained_and_left_as_it_was():
    model = TiedLM().eval()
    ids = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    before = snapshot(model)
    attr = EntropyAttribution(model, model.emb).attribute(ids, target=3, feature_std=torch.tensor(0.1), **FAST)
    assert attr.shape == (2, 4, 6) and torch.isfinite(attr).all() and (attr >= 0).all() and attr.sum() > 0
    before.assert_unchanged()
    assert model.head.weight is model.emb.weight and all(p.grad is None for p in model.parameters())
