"""Bad input gets a clear error naming the problem; numerical trouble never returns NaN silently."""

import warnings

import pytest
import torch
from torch import nn

from captum_entropy import EntropyAttribution, TinyStdWarning

from .tiny_models import LinearMap, LinearToy

FAST = dict(max_steps=20)


@pytest.fixture
def linear():
    model = LinearMap(4, 3, 2)
    return model, EntropyAttribution(model, model.emb), torch.randn(2, 4, 3)


def test_empty_inputs(linear):
    _, ea, _ = linear
    with pytest.raises(ValueError, match="empty"):
        ea.attribute(torch.zeros(0, 4, 3), **FAST)
    with pytest.raises(TypeError, match="inputs must be"):
        ea.attribute([], **FAST)


def test_row_that_is_all_padding(linear):
    _, ea, x = linear
    with pytest.raises(ValueError, match=r"sentence\(s\) \[1\] are all padding"):
        ea.attribute(x, mask=torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]]), **FAST)


def test_layer_not_in_the_model(linear):
    model, _, x = linear
    with pytest.raises(ValueError, match="never called"):
        EntropyAttribution(model, nn.Linear(3, 3)).attribute(x, **FAST)
    with pytest.raises(ValueError, match="never called"):
        EntropyAttribution(model, model.emb, target_layer=nn.Linear(3, 3)).attribute(x, **FAST)


def test_target_out_of_range(linear):
    _, ea, x = linear
    with pytest.raises(ValueError, match="target 5 does not select"):
        ea.attribute(x, target=5, **FAST)


def test_nan_or_inf_in_the_layer_output(linear):
    _, ea, x = linear
    x = x.clone()
    x[0, 1, 2] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf"):
        ea.attribute(x, **FAST)


@pytest.mark.parametrize(
    "std, match",
    [
        (torch.tensor([1.0, 0.0]), "finite and positive"),
        (torch.tensor([1.0, -2.0]), "finite and positive"),
        (torch.tensor([1.0, float("nan")]), "finite and positive"),
        (torch.ones(3), "does not broadcast"),
    ],
)
def test_bad_feature_std(linear, std, match):
    _, ea, x = linear
    with pytest.raises(ValueError, match=match):
        ea.attribute(x, feature_std=std, **FAST)


@pytest.mark.parametrize(
    "settings, match",
    [
        (dict(max_steps=0), "max_steps"),
        (dict(lr=0.0), "lr must be"),
        (dict(lr=-1.0), "lr must be"),
        (dict(n_samples=0), "n_samples"),
        (dict(entropy_weight=0), "entropy_weight"),
        (dict(internal_batch_size=0), "internal_batch_size"),
        (dict(max_sigma=-1.0), "max_sigma"),
        (dict(tolerance=-0.1), "tolerance must be"),
        (dict(tolerance=0.05, entropy_weight=0.1), "not both"),
        (dict(update="adam"), "penalised objective only"),
        (dict(update="newton", select="min_loss", entropy_weight=0.1), "need update='adam'"),
        (dict(method="exact"), "method must be"),
        (dict(preset="fast"), "unknown preset"),
        (dict(update="sgd"), "update must be"),
    ],
)
def test_nonsense_settings(linear, settings, match):
    _, ea, x = linear
    with pytest.raises(ValueError, match=match):
        ea.attribute(x, **settings)


def test_unknown_setting_is_a_type_error(linear):
    _, ea, x = linear
    with pytest.raises(TypeError, match="unknown setting"):
        ea.attribute(x, n_step=3)


def test_integer_layer_value_is_refused():
    emb = nn.Embedding(10, 4)
    model = lambda ids: emb(ids).sum((1, 2))
    with pytest.raises(TypeError, match="not floating point"):
        EntropyAttribution(model, emb).attribute(torch.randint(0, 10, (2, 3)), attribute_to_layer_input=True, **FAST)


def test_near_zero_feature_std_gets_a_floor_and_a_warning_never_nan():
    # MiniLM's last layer has a dimension whose std over sentences is about 1e-32
    model = LinearToy()
    x = torch.randn(2, 5, 256) / 100
    std = torch.full((256,), 0.3)
    std[7] = 1e-32
    with pytest.warns(TinyStdWarning, match="1 of 256 dimensions"):
        res = EntropyAttribution(model, model.emb).attribute_result(x, feature_std=std, **FAST)
    assert torch.isfinite(res.sigma).all()


def test_non_finite_loss_raises_instead_of_returning_nan():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Identity()

        def forward(self, x):
            return torch.exp(1e3 * self.emb(x)).sum((1, 2))[:, None]

    model = Exploding()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(FloatingPointError, match="non-finite"):
            EntropyAttribution(model, model.emb).attribute(
                torch.zeros(1, 3, 2), feature_std=torch.ones(1), max_sigma=10.0, init="random", **FAST
            )


def test_data_parallel_is_refused_with_a_pointer():
    with pytest.raises(TypeError, match="DataParallel"):
        EntropyAttribution(nn.DataParallel(nn.Linear(2, 2)), nn.Identity())
