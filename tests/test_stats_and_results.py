"""FeatureStats (streaming, masked, saved) and EntropyResult (saved, importance)."""

import numpy as np
import pytest
import torch

from captum_entropy import EntropyAttribution, EntropyResult, FeatureStats, TinyStdWarning

from .tiny_models import bert_logits


def _batches(n_batches=3, batch=5, tokens=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        ids = torch.randint(5, 60, (batch, tokens), generator=g)
        mask = torch.ones_like(ids)
        mask[0, 4:] = 0
        out.append((ids, mask))
    return out


def test_streaming_fit_equals_the_std_of_the_masked_token_mean(bert):
    f = bert_logits(bert)
    layer = bert.bert.encoder.layer[1]
    data = _batches()
    stats = FeatureStats().fit(f, data, layers={"enc1": layer, "output": None}, mask_index=1, model_name="tiny")
    rows, logits = [], []
    with torch.no_grad():
        for ids, mask in data:
            store = {}
            h = layer.register_forward_hook(lambda m, a, o: store.setdefault("h", o[0] if isinstance(o, tuple) else o))
            try:
                logits.append(f(ids, mask))
            finally:
                h.remove()
            w = mask[..., None].float()
            rows.append((store["h"] * w).sum(1) / w.sum(1))
    assert torch.allclose(stats.std_["enc1"], torch.cat(rows).std(0), rtol=1e-4)
    assert torch.allclose(stats.std_["output"], torch.cat(logits).std(0), rtol=1e-4)
    assert stats.n_ == {"enc1": 15, "output": 15} and stats.meta_["model_name"] == "tiny"


def test_stats_save_load_round_trip_and_use_by_layer_name(bert, tmp_path):
    layer = bert.bert.encoder.layer[0]
    stats = FeatureStats().fit(bert, _batches(), layers=[layer], mask_index=1)
    name = "bert.encoder.layer.0"
    assert list(stats.std_) == [name]
    stats.save(tmp_path / "stats.safetensors")
    loaded = FeatureStats.load(tmp_path / "stats.safetensors")
    assert torch.equal(loaded.std_[name], stats.std_[name]) and loaded.n_ == stats.n_
    ids, mask = _batches(1)[0]
    ea = EntropyAttribution(bert, bert.bert.embeddings, target_layer=layer)
    # the model is the forward_func here, so the loaded statistics are found by the layer's name
    a = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, feature_std=loaded, max_steps=20)
    b = ea.attribute_result(ids, additional_forward_args=(mask,), mask=mask, feature_std=stats[name], max_steps=20)
    assert torch.equal(torch.nan_to_num(a.sigma), torch.nan_to_num(b.sigma))
    assert a.feature == name


def test_stats_unknown_layer_gives_a_clear_error(bert):
    stats = FeatureStats().fit(bert_logits(bert), _batches(), mask_index=1)
    ids, mask = _batches(1)[0]
    ea = EntropyAttribution(bert_logits(bert), bert.bert.embeddings, target_layer=bert.bert.encoder.layer[0])
    with pytest.raises(ValueError, match="cannot tell which statistics"):
        ea.attribute(ids, additional_forward_args=(mask,), mask=mask, feature_std=stats, max_steps=5)


def test_tiny_fitted_std_is_floored_with_a_warning():
    emb = torch.nn.Embedding(10, 4)

    def model(ids):
        out = emb(ids).mean(1)
        return torch.cat([out, torch.zeros_like(out[:, :1])], 1)  # a constant dimension

    stats = FeatureStats().fit(model, [torch.randint(0, 10, (6, 3)) for _ in range(2)])
    assert stats.std_["output"][-1] == 0
    with pytest.warns(TinyStdWarning):
        floored = stats["output"]
    assert (floored > 0).all()


def test_result_save_load_and_importance(bert, tmp_path):
    ids, mask = _batches(1)[0]
    f = bert_logits(bert)
    res = EntropyAttribution(f, bert.bert.embeddings).attribute_result(
        ids, additional_forward_args=(mask,), mask=mask, max_steps=20
    )
    res.save(tmp_path / "r.safetensors")
    back = EntropyResult.load(tmp_path / "r.safetensors")
    assert torch.equal(torch.nan_to_num(back.sigma), torch.nan_to_num(res.sigma))
    assert back.feature == res.feature and back.settings == res.settings and back.n_dims == 16
    assert back.layer_dtype == res.layer_dtype == "float32"
    assert back.layer_shape == res.layer_shape == (5, 7, 16) and torch.equal(back.attribution(), res.attribution())
    imp = res.importance()
    valid = mask.bool()
    assert (imp[~valid] == 0).all()
    assert (imp[valid] >= 0).all() and (imp[valid] <= 1).all()
    # importance ranks words exactly inversely to entropy; kept information = entropy at the cap − entropy
    b = 1
    assert torch.equal(imp[b][valid[b]].argsort(), (-res.token_entropy[b][valid[b]]).argsort())
    gap = res.max_token_entropy[:, None] - res.token_entropy
    assert torch.allclose(res.token_kept[valid], gap[valid], atol=1e-4)
    assert torch.allclose(res.bits(), res.token_entropy / torch.log(torch.tensor(2.0)), equal_nan=True)
    assert res.entropy.shape == (5, 7, 16)
    assert torch.allclose(res.sentence_entropy_total, torch.nansum(res.token_entropy, 1))
    with pytest.deprecated_call(match="token_kept"):  # the old spellings still work, and say the new one
        assert torch.equal(res.kept_information, res.token_kept)
    with pytest.deprecated_call(match="sentence_entropy_total"):
        assert torch.equal(res.sentence_entropy, res.sentence_entropy_total)


def test_bootstrap_ci_draws_covers_the_true_mean_once_and_says_what_the_errors_alone_make():
    """Sentences whose true values spread with SD 1 around 3, each measured with SE 0.5: the
    estimates' spread already holds the errors, so the interval covers the true mean 95 % of the
    time (adding the copies' errors on top would count them twice: wider, ~99 %), and ``errors``
    is ±1.96·0.5/√n."""
    from captum_entropy._bootstrap import bootstrap_ci_draws

    rng = np.random.default_rng(3)
    n, covered = 100, 0
    for _ in range(300):
        truth = 3.0 + rng.normal(0, 1.0, n)
        point = truth + rng.normal(0, 0.5, n)
        draws = point[:, None] + rng.normal(0, 0.5, (n, 100))
        ci = bootstrap_ci_draws(point, draws, n_boot=1000, seed=int(rng.integers(1 << 30)))
        covered += ci.low <= 3.0 <= ci.high
    assert 0.92 <= covered / 300 <= 0.98
    assert np.diff(ci.errors)[0] / 2 == pytest.approx(1.96 * 0.5 / np.sqrt(n), rel=0.12)
    with pytest.raises(ValueError, match="draws must be"):
        bootstrap_ci_draws(point, draws[:10])


def test_bootstrap_ci_draws_bias_correction_takes_the_noise_out_of_a_std():
    """A std over 20 words each measured with SE 0.1, true std 0.3 (the page's regime: errors a
    third of the spread or less): noise pushes the estimate up by ~0.016 (√(0.3² + 0.1²) − 0.3);
    the copies' offset takes at least two thirds of that back."""
    from captum_entropy._bootstrap import bootstrap_ci_draws

    rng = np.random.default_rng(0)
    true = rng.normal(0, 0.3, (2000, 20))
    est = true + rng.normal(0, 0.1, true.shape)
    copies = est[:, None, :] + rng.normal(0, 0.1, (2000, 100, 20))
    point, draws, target = est.std(1, ddof=1), copies.std(2, ddof=1), true.std(1, ddof=1).mean()
    plain = bootstrap_ci_draws(point, draws)
    fixed = bootstrap_ci_draws(point, draws, bias_correct=True)
    assert plain.mean - target > 0.012
    assert abs(fixed.mean - target) < (plain.mean - target) / 3
