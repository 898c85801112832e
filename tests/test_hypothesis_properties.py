"""Property tests (hypothesis) over shapes, masks, batch splits and seeds.

* a batch gives every sentence the answer it gets alone, for any shapes and padding;
* ``internal_batch_size`` (the split into chunks) never changes an answer;
* padding never changes another row (nor the row it pads): neither its content nor its width;
* the same seed gives identical numbers on CPU, whatever else is in the batch;
* entropy is monotone in σ (and σ, hence entropy, in the tolerance), kept information the other way.

``derandomize=True``: the examples are a fixed function of the test, so CI is deterministic.
"""

from __future__ import annotations

import warnings

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from captum_entropy import EntropyAttribution, EntropyResult, entropy_from_sigma, sigma_from_entropy

PROPERTY = settings(max_examples=8, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
RTOL = 1e-4  # batched matmuls round differently in the last bits; nothing else may differ
OUT = 3


class MaskedMean(nn.Module):
    """tanh(W x_t) per token, averaged over the real tokens: a non-linear model that ignores padding."""

    def __init__(self, dims: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.emb = nn.Identity()
        self.register_buffer("W", torch.randn(OUT, dims, generator=g))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.emb(x) @ self.W.T)
        w = mask[..., None].to(h.dtype)
        return (h * w).sum(1) / w.sum(1)


@st.composite
def batches(draw, max_batch: int = 4, max_tokens: int = 6):
    """(x, mask): random sentences of random lengths (≥ 1), right-padded with garbage."""
    b = draw(st.integers(1, max_batch))
    t = draw(st.integers(1, max_tokens))
    d = draw(st.integers(1, 3))
    lengths = draw(st.lists(st.integers(1, t), min_size=b, max_size=b))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    x = torch.randn(b, t, d, generator=g)
    mask = torch.zeros(b, t, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    x = torch.where(mask[..., None].bool(), x, 7.0 * torch.randn(b, t, d, generator=g))  # padding holds garbage
    return x, mask


def _explain(x, mask, seed=0, **kw) -> EntropyResult:
    """Short runs whose sentences stop at different steps (tol=0.3), so that converged sentences
    leave the batch mid-run."""
    model = MaskedMean(x.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on short runs is not the point here
        return EntropyAttribution(model, model.emb).attribute_result(
            x, additional_forward_args=(mask,), feature_std=torch.full((OUT,), 0.5), seed=seed,
            **{"max_steps": 8, "check_every": 2, "n_samples": 8, "tol": 0.3, **kw})


@PROPERTY
@given(batch=batches(), seed=st.integers(0, 2**31 - 1))
def test_batched_equals_one_sentence_at_a_time(batch, seed):
    x, mask = batch
    together = _explain(x, mask, seed)
    assert torch.equal(together.mask, mask.bool())
    for b in range(x.shape[0]):
        n = int(mask[b].sum())
        alone = _explain(x[b : b + 1, :n], mask[b : b + 1, :n], seed)
        assert torch.allclose(together.sigma[b, :n], alone.sigma[0], rtol=RTOL, atol=0), b
        assert together.steps[b] == alone.steps[0]
        assert torch.isnan(together.sigma[b, n:]).all() and (together.kept[b, n:] == 0).all()


@PROPERTY
@given(batch=batches(), data=st.data())
def test_internal_batch_size_never_changes_an_answer(batch, data):
    x, mask = batch
    chunk = data.draw(st.integers(1, x.shape[0]))
    whole, split = _explain(x, mask), _explain(x, mask, internal_batch_size=chunk)
    assert torch.allclose(whole.sigma, split.sigma, rtol=RTOL, atol=0, equal_nan=True)
    assert torch.equal(whole.steps, split.steps)


@PROPERTY
@given(batch=batches(), extra=st.integers(1, 3), fill=st.floats(-1e3, 1e3))
def test_padding_never_changes_another_row(batch, extra, fill):
    x, mask = batch
    base = _explain(x, mask)
    # other content at every padded position: nothing may move, bit for bit
    refilled = torch.where(mask[..., None].bool(), x, torch.full_like(x, fill))
    same = _explain(refilled, mask)
    assert torch.equal(base.sigma.nan_to_num(-1), same.sigma.nan_to_num(-1))
    # wider padding (more padded columns): the same answers on the real positions
    wide_x = torch.cat([x, torch.full((x.shape[0], extra, x.shape[2]), fill)], 1)
    wide_mask = torch.cat([mask, torch.zeros(mask.shape[0], extra, dtype=mask.dtype)], 1)
    wide = _explain(wide_x, wide_mask)
    real = mask.bool()
    assert torch.allclose(base.sigma[real], wide.sigma[:, : x.shape[1]][real], rtol=RTOL, atol=0)
    assert torch.isnan(wide.sigma[:, x.shape[1]:]).all()


@PROPERTY
@given(batch=batches(), seed=st.integers(0, 2**31 - 1), data=st.data())
def test_same_seed_identical_numbers_whatever_else_is_in_the_batch(batch, seed, data):
    x, mask = batch
    a, b = _explain(x, mask, seed), _explain(x, mask, seed)
    for name in ("sigma", "steps", "losses", "distortion", "stationarity"):
        assert torch.equal(getattr(a, name).nan_to_num(-1), getattr(b, name).nan_to_num(-1)), name
    # a sentence's noise stream depends on its content and the seed, not on its position in the batch
    perm = torch.tensor(data.draw(st.permutations(range(x.shape[0]))))
    shuffled = _explain(x[perm], mask[perm], seed)
    assert torch.allclose(a.sigma[perm], shuffled.sigma, rtol=RTOL, atol=0, equal_nan=True)


@PROPERTY
@given(sigma=st.lists(st.floats(1e-6, 1e6), min_size=2, max_size=20, unique=True))
def test_entropy_is_monotone_in_sigma(sigma):
    s = torch.tensor(sorted(sigma), dtype=torch.float64)
    h = entropy_from_sigma(s)
    assert (h[1:] > h[:-1]).all()
    assert torch.allclose(sigma_from_entropy(h), s, rtol=1e-12)
    cap = s.max() * 2
    kept = torch.log(cap / s)  # what EntropyResult.kept holds: falls as σ grows, 0 at the cap
    assert (kept[1:] < kept[:-1]).all() and (kept > 0).all()


@PROPERTY
@given(batch=batches(), low=st.floats(0.005, 0.2), factor=st.floats(1.05, 20.0))
def test_sigma_and_entropy_grow_with_the_tolerance_kept_information_falls(batch, low, factor):
    x, mask = batch
    kw = dict(method="linearized", max_sigma=50.0)
    a, b = _explain(x, mask, tolerance=low, **kw), _explain(x, mask, tolerance=low * factor, **kw)
    real = mask.bool()
    assert (b.sigma[real] >= a.sigma[real] * (1 - 1e-6)).all()
    assert (b.token_entropy[real] >= a.token_entropy[real] - 1e-5).all()
    assert (b.token_kept[real] <= a.token_kept[real] + 1e-5).all()
    # and, per result, entropy is monotone in σ: order the words by σ, their entropies follow
    sig, ent = a.sigma[real][:, 0], a.token_entropy[real] / a.n_dims
    order = sig.argsort()
    assert (ent[order][1:] >= ent[order][:-1] - 1e-6).all()


@PROPERTY
@given(batch=batches())
def test_attributions_are_shaped_like_the_layer_and_zero_on_padding(batch):
    x, mask = batch
    model = MaskedMean(x.shape[-1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        attr = EntropyAttribution(model, model.emb).attribute(
            x, additional_forward_args=(mask,), feature_std=torch.full((OUT,), 0.5), max_steps=4, n_samples=8)
    assert attr.shape == x.shape and attr.dtype == x.dtype and attr.is_contiguous()
    assert torch.isfinite(attr).all() and (attr >= 0).all()
    assert (attr[~mask.bool()] == 0).all()
