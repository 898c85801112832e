"""Properties that must hold for any feature: invariances of the normalised loss."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from captum_entropy import EntropyAttribution

from .tiny_models import LinearMap


class Affine(nn.Module):
    """scale · tanh(map(x)) + shift: a non-linear feature with a known scale and offset."""

    def __init__(self, scale: float, shift: float):
        super().__init__()
        self.inner = LinearMap(5, 4, 6)
        self.emb = self.inner.emb
        self.scale, self.shift = scale, shift

    def forward(self, x):
        return self.scale * torch.tanh(3 * self.inner(x)) + self.shift


@settings(max_examples=8, deadline=None)
@given(scale=st.floats(0.01, 100.0), shift=st.floats(-50.0, 50.0))
def test_sigma_is_invariant_to_feature_scale_and_offset(scale, shift):
    # σ_S scales with the feature, and the distortion is a difference: σ must not move
    x = torch.randn(2, 5, 4, generator=torch.Generator().manual_seed(0))
    std = torch.full((6,), 0.5)
    base_model, model = Affine(1.0, 0.0), Affine(scale, shift)
    kw = dict(max_sigma=2.0, max_steps=40)
    base = EntropyAttribution(base_model, base_model.emb).attribute_result(x, feature_std=std, **kw)
    moved = EntropyAttribution(model, model.emb).attribute_result(x, feature_std=std * scale, **kw)
    assert torch.allclose(base.sigma, moved.sigma, rtol=2e-3)


@settings(max_examples=8, deadline=None)
@given(lam=st.floats(0.01, 1.0), factor=st.floats(0.1, 10.0))
def test_linear_sigma_scales_with_sqrt_of_tolerance(lam, factor):
    # closed form σ ∝ sqrt(τ): multiplying τ by f multiplies the warm start by sqrt(f) exactly
    model = LinearMap(4, 3, 2)
    x = torch.randn(1, 4, 3)
    ea = EntropyAttribution(model, model.emb)
    kw = dict(feature_std=torch.ones(2), max_sigma=1e6, max_steps=1)
    a = ea.attribute_result(x, tolerance=lam, **kw).init_sigma
    b = ea.attribute_result(x, tolerance=lam * factor, **kw).init_sigma
    assert torch.allclose(b, a * factor**0.5, rtol=1e-4)
