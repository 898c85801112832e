"""Batching, chunking and seeds never change an answer."""

import pytest
import torch

from captum_entropy import EntropyAttribution

from .tiny_models import bert_logits

FAST = dict(max_steps=60)


def _explainer(bert):
    layer = bert.bert.encoder.layer[0]
    return EntropyAttribution(bert_logits(bert), bert.bert.embeddings, target_layer=layer)


@pytest.mark.parametrize("settings", [FAST, dict(FAST, antithetic=True, precision=0.2)], ids=["default", "precision-stop"])
def test_batched_equals_one_sentence_at_a_time(bert, bert_batch, settings):
    ids, mask = bert_batch
    ea = _explainer(bert)
    batched = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, **settings)
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        alone = ea.attribute_result(ids[b : b + 1, :n], additional_forward_args=(mask[b : b + 1, :n],), **settings)
        assert torch.allclose(batched.sigma[b, :n], alone.sigma[0], rtol=1e-4, atol=0), b
        assert batched.steps[b] == alone.steps[0]
        assert torch.isnan(batched.sigma[b, n:]).all()
    if "precision" in settings:  # the stop did fire, at different steps for different sentences
        assert int(batched.steps.min()) < FAST["max_steps"]


def test_internal_batch_size_does_not_change_results(bert, bert_batch):
    ids, mask = bert_batch
    ea = _explainer(bert)
    whole = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, **FAST)
    chunked = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, internal_batch_size=1, **FAST)
    assert torch.allclose(whole.sigma, chunked.sigma, rtol=1e-4, equal_nan=True)
    assert torch.equal(whole.steps, chunked.steps)


def test_same_seed_same_numbers_other_seed_other_numbers(bert, bert_batch):
    ids, mask = bert_batch
    ea = _explainer(bert)
    run = lambda seed: ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, seed=seed, **FAST).sigma
    a, b, c = run(0), run(0), run(1)
    assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
    assert not torch.allclose(torch.nan_to_num(a), torch.nan_to_num(c))


def test_sentence_order_in_the_batch_does_not_matter(bert, bert_batch):
    ids, mask = bert_batch
    ea = _explainer(bert)
    perm = torch.tensor([2, 0, 3, 1])
    first = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, **FAST)
    shuffled = ea.attribute_result(ids[perm], additional_forward_args=(mask[perm],), mask=mask[perm], **FAST)
    assert torch.allclose(first.sigma[perm], shuffled.sigma, rtol=1e-4, equal_nan=True)


def test_amp_runs_and_stays_close_to_float32(bert, bert_batch):
    ids, mask = bert_batch
    ea = _explainer(bert)
    full = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, **FAST)
    half = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, amp=True, **FAST)
    valid = mask.bool()
    assert torch.isfinite(half.sigma[valid]).all()
    assert ((half.sigma[valid] / full.sigma[valid] - 1).abs().median()) < 0.05


def test_float_and_bfloat16_inputs_get_seeds():
    from captum_entropy.feature import sentence_seeds as _sentence_seeds

    rows = torch.randn(2, 3, 4)
    mask = torch.ones(2, 3, dtype=torch.bool)
    a = _sentence_seeds((rows,), mask, 0)
    b = _sentence_seeds((rows.bfloat16(),), mask, 0)
    assert len(set(a)) == 2 and len(set(b)) == 2 and a != b


def test_per_row_targets_and_pad_token_id_batched_equal_alone(bert, bert_batch):
    # the predicted-logit feature with per-row targets; padding from pad_token_id (= 0 here)
    ids, mask = bert_batch
    f = bert_logits(bert)
    ea = EntropyAttribution(f, bert.bert.embeddings)
    target = torch.tensor([0, 1, 1, 0])
    batched = ea.attribute_result(ids, target=target, additional_forward_args=(mask,), pad_token_id=0, **FAST)
    assert torch.equal(batched.mask, mask.bool())
    for b in range(ids.shape[0]):
        n = int(mask[b].sum())
        alone = ea.attribute_result(ids[b : b + 1, :n], target=int(target[b]), additional_forward_args=(mask[b : b + 1, :n],), **FAST)
        assert torch.allclose(batched.sigma[b, :n], alone.sigma[0], rtol=1e-4, atol=0), b
        assert batched.steps[b] == alone.steps[0] and batched.converged[b] == alone.converged[0]
